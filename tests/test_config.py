"""PPOConfig: every field validated with one clear line; budgets in whole rollouts."""

from __future__ import annotations

import warnings

import pytest

from purejaxppo import PPOConfig


@pytest.mark.parametrize("kwargs,field", [
    ({"num_envs": 0}, "num_envs"),
    ({"num_minibatches": 3}, "num_minibatches"),
    ({"gamma": 1.5}, "gamma"),
    ({"lr": -1.0}, "lr"),
    ({"policy_loss": "ppo"}, "policy_loss"),
    ({"activation": "sigmoid"}, "activation"),
    ({"total_timesteps": 10}, "total_timesteps"),
    ({"clip_eps": 0.0}, "clip_eps"),
    ({"num_steps": 2.5}, "num_steps"),
    ({"num_steps": 0}, "num_steps"),
    ({"update_epochs": -1}, "update_epochs"),
    ({"num_minibatches": 0}, "num_minibatches"),
    ({"total_timesteps": 0}, "total_timesteps"),
    ({"gamma": 0.0}, "gamma"),
    ({"gae_lambda": 1.5}, "gae_lambda"),
    ({"gae_lambda": -0.1}, "gae_lambda"),
    ({"clip_eps": 1.5}, "clip_eps"),
    ({"ent_coef": -0.01}, "ent_coef"),
    ({"vf_coef": -1.0}, "vf_coef"),
    ({"max_grad_norm": 0.0}, "max_grad_norm"),
    ({"lr": float("nan")}, "lr"),
    ({"lr": float("inf")}, "lr"),
    ({"kl_target": 0.0}, "kl_target"),
    ({"kl_beta_init": -1.0}, "kl_beta_init"),
    ({"hidden_sizes": ()}, "hidden_sizes"),
    ({"hidden_sizes": (64, 0)}, "hidden_sizes"),
    ({"anneal_lr": "yes"}, "anneal_lr"),
    ({"num_envs": True}, "num_envs"),
    ({"env": ""}, "env"),
    ({"network": ""}, "network"),
])
def test_bad_config_gives_clear_error(kwargs, field):
    (value,) = kwargs.values()
    with pytest.raises(ValueError, match=rf"PPOConfig\.{field}=") as error:
        PPOConfig(**kwargs)
    message = str(error.value)
    assert repr(value) in message and "invalid: " in message  # field, bad value, what is allowed
    assert "\n" not in message


def test_budget_that_is_not_whole_rollouts_warns():
    with pytest.warns(UserWarning, match="not a multiple of num_envs \\* num_steps = 512"):
        config = PPOConfig(total_timesteps=1000)
    assert config.num_updates == 1


def test_default_config_is_whole_rollouts_and_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = PPOConfig()
    assert config.total_timesteps == config.num_updates * config.batch_size == 976 * 512

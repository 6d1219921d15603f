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
    ({"lr": 1e-50}, "lr"),  # 0 in float32, the program's precision
    ({"lr": 10**400}, "lr"),  # no float holds it
    ({"policy_loss": ["ppo_clip"]}, "policy_loss"),
    ({"hidden_sizes": [float("inf")]}, "hidden_sizes"),
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


@pytest.mark.parametrize("value", ["64", (64.9, 32.5), (64, "a"), True, None])
def test_hidden_sizes_that_are_not_whole_widths_are_refused(value):
    with pytest.raises(ValueError, match=r"PPOConfig\.hidden_sizes=.*layer widths such as"):
        PPOConfig(hidden_sizes=value)


def test_hidden_sizes_accepts_one_int_lists_and_whole_floats():
    assert PPOConfig(hidden_sizes=64).hidden_sizes == (64,)
    assert PPOConfig(hidden_sizes=[32, 16.0]).hidden_sizes == (32, 16)


def test_numpy_and_jax_scalars_are_accepted_as_plain_numbers():
    import jax.numpy as jnp
    import numpy as np

    config = PPOConfig(num_envs=np.int64(8), lr=np.float32(1e-3), gamma=jnp.float32(0.95),
                       hidden_sizes=np.array([16, 16]), anneal_lr=np.bool_(False))
    assert config.num_envs == 8 and isinstance(config.num_envs, int)
    assert isinstance(config.lr, float) and config.anneal_lr is False
    assert config.hidden_sizes == (16, 16)


def test_budget_past_int32_is_refused_with_the_limit():
    with pytest.raises(ValueError, match="must be at most 2,147,483,647"):
        PPOConfig(total_timesteps=10**22)


def test_policy_loss_docstring_names_every_loss():
    """The field's help (the command line shows it) lists exactly the registered losses."""
    from purejaxppo.app.cli import field_docs
    from purejaxppo.losses import POLICY_LOSSES

    doc = field_docs(PPOConfig)["policy_loss"]
    named = [n for n in doc.replace(",", " ").split() if n in POLICY_LOSSES]
    assert set(named) == set(POLICY_LOSSES)

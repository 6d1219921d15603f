"""Gradient agreement along a real PPO update: the ratio and log forms agree at every step, the
vanilla policy gradient only at the first."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from purejaxppo import PPOConfig
from purejaxppo.analysis import DEFAULT_LOSSES, gradient_agreement

# CartPole's standard setting with 10 epochs (the PPO paper's MuJoCo setting): 40 minibatch
# steps, long enough for theta to move measurably away from theta_old.
CONFIG = PPOConfig(total_timesteps=512, update_epochs=10)


@pytest.fixture(scope="module")
def agreement():
    return gradient_agreement(CONFIG, jax.random.key(0))


def column(result, a: str, b: str) -> np.ndarray:
    return np.asarray(result.cosine[:, result.pairs.index((a, b))])


def test_shapes_and_pair_names(agreement):
    steps, pairs = CONFIG.update_epochs * CONFIG.num_minibatches, 10
    assert agreement.losses == DEFAULT_LOSSES
    assert len(agreement.pairs) == pairs and len(set(agreement.pairs)) == pairs
    assert agreement.pair_names[0] == "ppo_clip vs ppo_clip_log"
    assert agreement.cosine.shape == agreement.norm_ratio.shape == (steps, pairs)
    assert agreement.grad_norm.shape == (steps, len(DEFAULT_LOSSES))
    assert agreement.approx_kl.shape == (steps,)
    assert np.all(np.isfinite(agreement.cosine)) and np.all(np.asarray(agreement.grad_norm) > 0)


def test_every_surrogate_is_the_vanilla_policy_gradient_at_the_first_step(agreement):
    np.testing.assert_allclose(agreement.cosine[0], 1.0, atol=1e-5)
    np.testing.assert_allclose(agreement.norm_ratio[0], 1.0, atol=1e-4)
    assert float(agreement.approx_kl[0]) < 1e-6  # theta is still theta_old


def test_ratio_and_log_forms_agree_at_every_step(agreement):
    for a, b in (("importance_ratio", "importance_log"), ("ppo_clip", "ppo_clip_log")):
        assert np.all(column(agreement, a, b) > 1 - 1e-5), (a, b)
        j = agreement.pairs.index((a, b))
        np.testing.assert_allclose(agreement.norm_ratio[:, j], 1.0, atol=1e-4)


def test_policy_gradient_drifts_from_the_surrogate_as_theta_leaves_theta_old(agreement):
    cos = column(agreement, "importance_ratio", "policy_gradient")
    assert cos[-1] < 1 - 1e-4 and cos[-1] < cos[0]
    # Not a fluke of the last minibatch: the whole last epoch disagrees more than the first.
    per_epoch = cos.reshape(CONFIG.update_epochs, CONFIG.num_minibatches).mean(axis=1)
    assert per_epoch[-1] < per_epoch[0] and per_epoch[-1] < 1 - 1e-4
    assert float(agreement.approx_kl[-1]) > 1e-4


def test_first_step_agrees_for_another_driver_and_seed():
    result = gradient_agreement(CONFIG, jax.random.key(1),
                                losses=("importance_ratio", "policy_gradient", "kl_penalty"),
                                driver="policy_gradient")
    assert result.pairs == (("importance_ratio", "policy_gradient"),
                            ("importance_ratio", "kl_penalty"), ("policy_gradient", "kl_penalty"))
    np.testing.assert_allclose(result.cosine[0], 1.0, atol=1e-5)
    np.testing.assert_allclose(result.norm_ratio[0], 1.0, atol=1e-4)


def test_recurrent_gradients_through_the_sequences_agree_as_the_feed_forward_ones():
    """A GRU's gradients (through whole sequences): every surrogate is the vanilla gradient at the
    first step, the ratio and log forms agree at every step."""
    config = PPOConfig(network="gru", hidden_sizes=(16,), num_steps=32, total_timesteps=128,
                       update_epochs=3)
    result = gradient_agreement(config, jax.random.key(0))
    assert result.cosine.shape == (12, len(result.pairs))
    np.testing.assert_allclose(result.cosine[0], 1.0, atol=1e-5)
    for a, b in (("ppo_clip", "ppo_clip_log"), ("importance_ratio", "importance_log")):
        np.testing.assert_allclose(column(result, a, b), 1.0, atol=1e-4)
    assert float(np.max(result.approx_kl)) > 0


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown policy loss"):
        gradient_agreement(CONFIG, jax.random.key(0), losses=("ppo_clip", "nope"))
    with pytest.raises(ValueError, match="unknown policy loss"):
        gradient_agreement(CONFIG, jax.random.key(0), driver="trpo")
    with pytest.raises(ValueError, match="at least two"):
        gradient_agreement(CONFIG, jax.random.key(0), losses=("ppo_clip",))


def test_losses_given_as_one_string_are_named():
    with pytest.raises(ValueError, match=r"losses must be a sequence of at least two policy loss "
                                         r"names, got 'ppo_clip'"):
        gradient_agreement(PPOConfig(), jax.random.key(0), losses="ppo_clip")

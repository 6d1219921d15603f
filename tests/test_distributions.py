"""Distributions: sampling frequencies, and Gaussian log-probabilities of unclipped samples."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo import envs
from purejaxppo.distributions import Categorical, DiagGaussian


def test_categorical_sampling_matches_probabilities():
    logits = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    dist = Categorical(jnp.broadcast_to(logits, (20000, 3)))
    actions = dist.sample(Categorical.noise(jax.random.key(0), (20000,), 3))
    freq = np.bincount(np.asarray(actions), minlength=3) / 20000
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=0.015)


def test_gaussian_log_prob_is_of_the_unclipped_sample_and_env_gets_clipped_actions():
    env = envs.make("Pendulum-v1")
    dist = DiagGaussian(jnp.array([[1.9]]), jnp.array([0.0]))
    action = dist.sample(jnp.array([[2.0]]))  # 3.9: outside [-2, 2]
    np.testing.assert_allclose(action, [[3.9]], rtol=1e-6)
    want = -0.5 * 2.0**2 - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(dist.log_prob(action), [want], rtol=1e-6)
    _, state = env.reset(jax.random.key(0))
    out_clipped = env.step(jax.random.key(1), state, jnp.array([3.9]))
    out_bound = env.step(jax.random.key(1), state, jnp.array([2.0]))
    out_inside = env.step(jax.random.key(1), state, jnp.array([1.0]))
    np.testing.assert_array_equal(out_clipped[0], out_bound[0])
    np.testing.assert_array_equal(out_clipped[2], out_bound[2])
    assert not np.array_equal(out_inside[0], out_bound[0])  # the action does matter

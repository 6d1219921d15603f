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


def test_masked_categorical_gives_invalid_actions_probability_exactly_zero():
    from purejaxppo.distributions import MaskedCategorical

    logits = jnp.array([[3.0, 0.5, -1.0, 2.0], [0.0, 10.0, 0.0, 0.0]])
    mask = jnp.array([[True, False, True, False], [False, False, True, False]])
    dist = Categorical(logits).masked(mask)
    assert isinstance(dist, MaskedCategorical)
    # log_prob of valid actions: normalised over the valid ones only.
    want0 = np.log(np.exp([3.0, -1.0]) / np.exp([3.0, -1.0]).sum())
    np.testing.assert_allclose(dist.log_prob(jnp.array([0, 2])), [want0[0], 0.0], atol=1e-6)
    np.testing.assert_allclose(dist.log_prob(jnp.array([2, 2])), [want0[1], 0.0], atol=1e-6)
    p = np.exp(np.asarray(dist.log_probs()))
    assert np.all(p[~np.asarray(mask)] == 0.0)
    np.testing.assert_allclose(p.sum(axis=-1), [1.0, 1.0], rtol=1e-6)
    # Entropy over the valid actions; exactly 0 with one valid action (no NaN).
    q = np.exp(want0)
    np.testing.assert_allclose(dist.entropy(), [-(q * want0).sum(), 0.0], atol=1e-6)
    np.testing.assert_array_equal(dist.mode(), [0, 2])
    # Never sampled, whatever the noise.
    noise = Categorical.noise(jax.random.key(0), (20000, 2), 4)
    actions = np.asarray(dist.sample(noise))
    assert np.all(mask[0][actions[:, 0]]) and np.all(actions[:, 1] == 2)
    freq = np.bincount(actions[:, 0], minlength=4) / 20000
    np.testing.assert_allclose(freq, [q[0], 0.0, q[1], 0.0], atol=0.015)
    # A huge invalid logit changes nothing.
    big = Categorical(logits.at[:, 1].set(1e9)).masked(mask)
    np.testing.assert_allclose(big.log_probs()[:, [0, 2]], dist.log_probs()[:, [0, 2]], atol=1e-6)


def test_masked_categorical_gradients_are_finite_and_skip_invalid_logits():
    mask = jnp.array([False, True, False])

    def loss(logits):
        dist = Categorical(logits).masked(mask)
        return dist.log_prob(jnp.array(1)) + dist.entropy() + dist.kl(dist)

    g = jax.grad(loss)(jnp.array([1.0, 2.0, 3.0]))
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.0])  # one valid action: nothing to learn
    mask2 = jnp.array([True, True, False])
    g2 = jax.grad(lambda x: Categorical(x).masked(mask2).entropy())(jnp.array([1.0, 2.0, 3.0]))
    assert np.all(np.isfinite(g2)) and g2[2] == 0.0 and g2[0] != 0.0


def test_multi_categorical_factorises_log_prob_entropy_and_kl():
    from purejaxppo.distributions import MultiCategorical

    logits = jnp.array([0.3, -0.2, 1.0, 0.0, 2.0])  # factors of 2 and 3 values
    dist = MultiCategorical.of(logits, (2, 3))
    a, b = Categorical(logits[:2]), Categorical(logits[2:])
    action = jnp.array([1, 2])
    np.testing.assert_allclose(dist.log_prob(action), a.log_prob(1) + b.log_prob(2), rtol=1e-6)
    np.testing.assert_allclose(dist.entropy(), a.entropy() + b.entropy(), rtol=1e-6)
    other = MultiCategorical.of(logits[::-1], (2, 3))
    want_kl = a.kl(Categorical(logits[::-1][:2])) + b.kl(Categorical(logits[::-1][2:]))
    np.testing.assert_allclose(dist.kl(other), want_kl, rtol=1e-6)
    # The joint probabilities sum to 1.
    total = sum(np.exp(dist.log_prob(jnp.array([i, j]))) for i in range(2) for j in range(3))
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)
    # Sampling: each factor with its own frequencies.
    batch = MultiCategorical.of(jnp.broadcast_to(logits, (20000, 5)), (2, 3))
    samples = np.asarray(batch.sample(MultiCategorical.noise(jax.random.key(1), (20000,), 5)))
    assert samples.shape == (20000, 2)
    np.testing.assert_allclose(np.bincount(samples[:, 1], minlength=3) / 20000,
                               np.exp(b.log_prob(jnp.arange(3))), atol=0.015)
    # A mask per factor.
    masked = dist.masked(jnp.array([True, True, False, True, False]))
    np.testing.assert_array_equal(masked.mode(), [0, 1])
    np.testing.assert_allclose(masked.log_prob(jnp.array([0, 1])), a.log_prob(0), rtol=1e-6)

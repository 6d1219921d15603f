"""Advantages: GAE against a plain-Python definition; truncation bootstraps, termination stops."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from purejaxppo.advantages import bootstrap_values, gae, normalize_advantages


def python_gae(rewards, values, last_value, final_values, terminated, truncated, gamma, lam):
    """Plain-Python GAE for one environment, written from the definition."""
    T = len(rewards)
    adv = [0.0] * T
    running = 0.0
    for t in reversed(range(T)):
        if terminated[t]:
            next_v = 0.0
        elif truncated[t]:
            next_v = final_values[t]
        else:
            next_v = values[t + 1] if t + 1 < T else last_value
        delta = rewards[t] + gamma * next_v - values[t]
        if terminated[t] or truncated[t]:
            running = 0.0  # the episode ended: nothing after it belongs to its advantage
        running = delta + gamma * lam * running
        adv[t] = running
    return np.array(adv)


def test_gae_matches_python_on_a_hand_made_trajectory():
    rewards = np.array([1.0, 0.5, 1.0, 2.0, 0.0, 1.0, -1.0, 1.0])
    values = np.array([0.3, 0.2, 0.9, 1.5, 0.1, 0.4, 0.7, 0.2])
    final_values = np.array([9.0, 9.0, 5.0, 9.0, 9.0, 3.0, 9.0, 9.0])  # only used where truncated
    terminated = np.array([0, 1, 0, 0, 0, 1, 0, 0], bool)
    truncated = np.array([0, 0, 1, 0, 0, 1, 0, 0], bool)  # step 5: both (terminal wins)
    last_value, gamma, lam = 0.8, 0.9, 0.8
    next_v = bootstrap_values(jnp.asarray(values), jnp.asarray(last_value), jnp.asarray(final_values),
                              jnp.asarray(terminated), jnp.asarray(truncated))
    adv, ret = gae(jnp.asarray(rewards), jnp.asarray(values), next_v,
                   jnp.asarray(terminated | truncated), gamma, lam)
    want = python_gae(rewards, values, last_value, final_values, terminated, truncated, gamma, lam)
    np.testing.assert_allclose(adv, want, rtol=1e-6)
    np.testing.assert_allclose(ret, want + values, rtol=1e-6)
    # The truncated step bootstraps from V(final_obs)=5.0, not from the next episode's V=1.5.
    np.testing.assert_allclose(adv[2], 1.0 + gamma * 5.0 - 0.9, rtol=1e-6)
    # Terminated steps bootstrap from 0, even when also truncated.
    np.testing.assert_allclose(adv[5], 1.0 - 0.4, rtol=1e-6)


def test_gae_batched_over_envs_matches_per_env():
    rng = np.random.default_rng(1)
    T, N = 20, 3
    r, v, fv = rng.normal(size=(3, T, N))
    lv = rng.normal(size=N)
    term, trunc = rng.random((T, N)) < 0.1, rng.random((T, N)) < 0.1
    next_v = bootstrap_values(*map(jnp.asarray, (v, lv, fv, term, trunc)))
    adv, _ = gae(jnp.asarray(r), jnp.asarray(v), next_v, jnp.asarray(term | trunc), 0.99, 0.95)
    for n in range(N):
        want = python_gae(r[:, n], v[:, n], lv[n], fv[:, n], term[:, n], trunc[:, n], 0.99, 0.95)
        np.testing.assert_allclose(adv[:, n], want, rtol=1e-5, atol=1e-6)


def test_normalize_advantages_has_zero_mean_unit_std_and_survives_constants():
    adv = jnp.asarray(np.random.default_rng(0).normal(3.0, 5.0, size=(7, 9)), jnp.float32)
    out = normalize_advantages(adv)
    assert abs(float(out.mean())) < 1e-6 and abs(float(out.std()) - 1.0) < 1e-5
    np.testing.assert_array_equal(normalize_advantages(jnp.ones(5)), np.zeros(5))


def test_a_single_advantage_is_left_as_it_is():
    """Normalised, one advantage would be 0 and its minibatch would carry no policy gradient."""
    np.testing.assert_array_equal(normalize_advantages(jnp.array([-2.5])), [-2.5])
    np.testing.assert_array_equal(normalize_advantages(jnp.array([[4.0]])), [[4.0]])

"""Running statistics: the parallel update matches numpy, and the count stays exact."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo import normalize as norm


def test_running_stats_match_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(300, 5))
    stats = norm.init_stats((5,))
    for chunk in np.split(data, 6):
        stats = norm.update_stats(stats, jnp.asarray(chunk))
    np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-4)
    np.testing.assert_allclose(stats.var, data.var(0), rtol=1e-3)


def test_count_is_exact_past_two_to_the_24():
    """A float32 count stops growing at 2^24 (2^24 + 1 rounds back); the int32 count does not,
    so a batch's weight keeps shrinking like 1 / count and the mean stays a true mean."""
    start = 2**24
    stats = norm.RunningStats(mean=jnp.zeros(()), var=jnp.ones(()), count=jnp.asarray(start))
    update = jax.jit(norm.update_stats)
    for _ in range(4):
        stats = update(stats, jnp.ones((1,)))
    assert int(stats.count) == start + 4
    assert np.float32(start) + np.float32(1) == np.float32(start)  # what a float count would do
    # The mean moved by 4 samples of 1 over ~2^24: 4 / 2^24 (a float count would give the same
    # weight 1 / 2^24 forever, here the same to first order, but it never counts further).
    np.testing.assert_allclose(float(stats.mean), 4 / (start + 4), rtol=1e-3)
    saturated = norm.RunningStats(mean=jnp.zeros(()), var=jnp.ones(()),
                                  count=jnp.asarray(norm.MAX_COUNT - 1))
    assert int(update(saturated, jnp.ones((8,))).count) == norm.MAX_COUNT  # no int32 overflow


def test_first_batch_dominates_the_prior():
    stats = norm.update_stats(norm.init_stats((2,)), jnp.asarray([[4.0, -2.0], [6.0, -2.0]]))
    np.testing.assert_allclose(stats.mean, [5.0, -2.0], rtol=1e-4)
    np.testing.assert_allclose(stats.var, [1.0, 0.0], atol=2e-3)  # prior weight 1e-4
    assert int(stats.count) == 2

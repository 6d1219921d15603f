"""Running mean and variance, for observation and reward normalisation (kept in the train state)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

CLIP = 10.0
"""Normalised observations and rewards are clipped to [-CLIP, CLIP]."""
EPS = 1e-8
PRIOR_COUNT = 1e-4
"""Weight of the initial statistics (mean 0, var 1): tiny, so the first batch dominates."""
MAX_COUNT = 2**31 - 1
"""The sample count saturates here (a new batch of ``n`` samples then weighs
``n / (MAX_COUNT + n)``, ~2e-9 for the default 4 environments)."""


class RunningStats(NamedTuple):
    """Mean and variance of everything seen so far (Chan et al.'s parallel update)."""

    mean: Array
    var: Array
    count: Array
    """Samples merged so far, int32: exact up to :data:`MAX_COUNT` (a float32 count stops
    growing at 2^24 and would turn the mean into a moving average)."""


def init_stats(shape: tuple[int, ...] = ()) -> RunningStats:
    """Stats before any data: mean 0, var 1, count 0."""
    f32 = jnp.float32
    return RunningStats(mean=jnp.zeros(shape, f32), var=jnp.ones(shape, f32),
                        count=jnp.zeros((), jnp.int32))


def update_stats(stats: RunningStats, batch: Array) -> RunningStats:
    """Merges a batch (leading axis = samples) into the stats.

    With ``m = count + PRIOR_COUNT`` the weight of the stats so far, ``d = mean_b - mean`` and
    ``n = m + n_b``: ``mean' = mean + d n_b / n`` and
    ``var' = (var m + var_b n_b + d^2 m n_b / n) / n``.
    """
    n_b = batch.shape[0]
    mean_b, var_b = jnp.mean(batch, axis=0), jnp.var(batch, axis=0)
    old = stats.count.astype(jnp.float32) + PRIOR_COUNT
    total = old + n_b
    delta = mean_b - stats.mean
    mean = stats.mean + delta * n_b / total
    m2 = stats.var * old + var_b * n_b + jnp.square(delta) * old * n_b / total
    count = stats.count + jnp.minimum(n_b, MAX_COUNT - stats.count)
    return RunningStats(mean=mean, var=m2 / total, count=count)


def normalize(stats: RunningStats, x: Array) -> Array:
    """``clip((x - mean) / sqrt(var + eps), -CLIP, CLIP)``."""
    return jnp.clip((x - stats.mean) / jnp.sqrt(stats.var + EPS), -CLIP, CLIP)


def scale(stats: RunningStats, x: Array) -> Array:
    """``clip(x / sqrt(var + eps), -CLIP, CLIP)``: rewards are scaled, not centred."""
    return jnp.clip(x / jnp.sqrt(stats.var + EPS), -CLIP, CLIP)

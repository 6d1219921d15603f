"""Running mean and variance, for observation and reward normalisation (kept in the train state)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

CLIP = 10.0
"""Normalised observations and rewards are clipped to [-CLIP, CLIP]."""
EPS = 1e-8


class RunningStats(NamedTuple):
    """Mean, variance and count of everything seen so far (Chan et al.'s parallel update)."""

    mean: Array
    var: Array
    count: Array


def init_stats(shape: tuple[int, ...] = ()) -> RunningStats:
    """Stats before any data: mean 0, var 1, a tiny count so the first batch dominates."""
    f32 = jnp.float32
    return RunningStats(jnp.zeros(shape, f32), jnp.ones(shape, f32), jnp.asarray(1e-4, f32))


def update_stats(stats: RunningStats, batch: Array, axis_name: str | None = None) -> RunningStats:
    """Merges a batch (leading axis = samples) into the stats.

    With ``d = mean_b - mean``, ``n = count + n_b``:
    ``mean' = mean + d n_b / n`` and ``var' = (var count + var_b n_b + d^2 count n_b / n) / n``.

    With ``axis_name`` (inside ``shard_map``) the batch is the union of every device's equal-size
    shard: ``mean_b`` is the mean of the shards' means and ``var_b`` the mean of
    ``var_shard + (mean_shard - mean_b)^2``, so every device holds the same stats.
    """
    n_b = batch.shape[0]
    mean_b, var_b = jnp.mean(batch, axis=0), jnp.var(batch, axis=0)
    if axis_name is not None:
        shard_mean = mean_b
        mean_b = jax.lax.pmean(shard_mean, axis_name)
        var_b = jax.lax.pmean(var_b + jnp.square(shard_mean - mean_b), axis_name)
        n_b = n_b * jax.lax.psum(1, axis_name)
    total = stats.count + n_b
    delta = mean_b - stats.mean
    mean = stats.mean + delta * n_b / total
    m2 = stats.var * stats.count + var_b * n_b + jnp.square(delta) * stats.count * n_b / total
    return RunningStats(mean, m2 / total, total)


def normalize(stats: RunningStats, x: Array) -> Array:
    """``clip((x - mean) / sqrt(var + eps), -CLIP, CLIP)``."""
    return jnp.clip((x - stats.mean) / jnp.sqrt(stats.var + EPS), -CLIP, CLIP)


def scale(stats: RunningStats, x: Array) -> Array:
    """``clip(x / sqrt(var + eps), -CLIP, CLIP)``: rewards are scaled, not centred."""
    return jnp.clip(x / jnp.sqrt(stats.var + EPS), -CLIP, CLIP)

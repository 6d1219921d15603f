"""Metrics: one scalar per update, reduced on device (memory O(num_updates), not O(steps))."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

METRICS = (
    "episode_return", "episode_length", "policy_loss", "value_loss", "entropy", "approx_kl",
    "approx_kl_k1", "clip_fraction", "explained_variance", "learning_rate", "kl_beta",
    "env_steps", "nonfinite",
    "trpo_kl", "trpo_line_search_steps", "trpo_improvement",  # 0 when update_rule is 'ppo'
)
"""Keys of ``TrainResult.metrics``; each value has shape ``[num_updates]`` (per seed)."""


def explained_variance(values: Array, targets: Array) -> Array:
    """``1 - Var[targets - values] / Var[targets]``: 1 is a perfect critic, <= 0 is useless.

    Defined as 0 when the targets are constant (the ratio is undefined there).
    """
    var_y = jnp.var(targets)
    return jnp.where(var_y > 0, 1.0 - jnp.var(targets - values) / jnp.where(var_y > 0, var_y, 1.0),
                     0.0)


def mean_or_last(total: Array, count: Array, last: Array) -> Array:
    """``total / count`` where ``count > 0``, else ``last`` (carried forward, never NaN)."""
    return jnp.where(count > 0, total / jnp.maximum(count, 1), last)

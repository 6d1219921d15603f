"""Metrics: one scalar per update, reduced on device (memory O(num_updates), not O(steps)).

Every run reports :data:`COMMON_METRICS`; the update rule adds its own
(:data:`purejaxppo.update.PPO_METRICS`, :data:`purejaxppo.trpo.TRPO_METRICS`).
:func:`final_return` is the one definition of a run's final return, used by the command line,
``sweep`` and every benchmark.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

COMMON_METRICS = ("episode_return", "episode_length", "explained_variance", "learning_rate",
                  "env_steps", "nonfinite")
"""Keys of every run's ``TrainResult.metrics``, each ``[num_updates]`` per seed.

``episode_return``/``episode_length``: mean undiscounted return and length of the episodes that
finished during the update, the last such value carried forward when none did, NaN until the
first episode of the run finishes."""

FINAL_FRACTION = 0.05
"""A run's final return averages its last 5% of updates (at least one)."""


def final_window(num_updates: int) -> int:
    """How many of the last updates :func:`final_return` averages: ``max(1, ceil(0.05 n))``."""
    return max(1, math.ceil(FINAL_FRACTION * num_updates))


def final_return(episode_return: np.ndarray | Array) -> np.ndarray:
    """The final return of each run: ``episode_return [..., num_updates]`` averaged over its
    last :func:`final_window` updates, ignoring NaN (updates before any episode finished).

    NaN for a run in which no episode finished within that window.
    """
    x = np.asarray(episode_return, np.float64)
    window = x[..., x.shape[-1] - final_window(x.shape[-1]):]
    finite = ~np.isnan(window)
    count = finite.sum(axis=-1)
    total = np.where(finite, window, 0.0).sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def explained_variance(values: Array, targets: Array) -> Array:
    """``1 - Var[targets - values] / Var[targets]``: 1 is a perfect critic, <= 0 is useless.

    Defined as 0 when the targets are constant (the ratio is undefined there).
    """
    var_y = jnp.var(targets)
    return jnp.where(var_y > 0, 1.0 - jnp.var(targets - values) / jnp.where(var_y > 0, var_y, 1.0),
                     0.0)


def mean_or_last(total: Array, count: Array, last: Array) -> Array:
    """``total / count`` where ``count > 0``, else ``last`` (carried forward)."""
    return jnp.where(count > 0, total / jnp.maximum(count, 1), last)

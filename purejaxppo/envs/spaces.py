"""Space descriptors: what an environment observes and which actions it takes.

Plain, hashable descriptions (no JAX arrays inside), so they can be compared and printed, and so
an :class:`~purejaxppo.envs.core.Env` can be a static argument of a jitted function.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class Discrete(NamedTuple):
    """``n`` actions (or observation values) ``0 .. n-1``."""

    n: int


class Box(NamedTuple):
    """A real array of ``shape``; ``low`` and ``high`` are per-element bounds (may be +-inf)."""

    shape: tuple[int, ...]
    low: tuple[float, ...]
    """Bounds flattened in C order, one per element."""
    high: tuple[float, ...]

    @staticmethod
    def of(shape: tuple[int, ...], low: object = -np.inf, high: object = np.inf) -> Box:
        """A Box of ``shape`` with bounds broadcast from scalars or arrays."""
        shape = tuple(int(s) for s in shape)
        lo = np.broadcast_to(np.asarray(low, np.float32), shape).reshape(-1)
        hi = np.broadcast_to(np.asarray(high, np.float32), shape).reshape(-1)
        return Box(shape, tuple(float(x) for x in lo), tuple(float(x) for x in hi))

    def __repr__(self) -> str:
        lo, hi = min(self.low, default=0.0), max(self.high, default=0.0)
        return f"Box(shape={self.shape}, low>={lo:g}, high<={hi:g})"

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


class MultiDiscrete(NamedTuple):
    """Independent discrete choices: factor ``i`` takes values ``0 .. nvec[i]-1``."""

    nvec: tuple[int, ...]


Space = Discrete | Box | MultiDiscrete


def flat_size(space: Space) -> int:
    """Length of the float32 vector :func:`flatten` makes of one observation of ``space``."""
    if isinstance(space, Discrete):
        return space.n
    if isinstance(space, Box):
        return space.size
    return sum(space.nvec)


def flatten(space: Space, obs: Array) -> Array:
    """One observation as a float32 vector.

    Box: flattened in C order (MinAtar's 10x10xC grid becomes 100*C features; a network can
    restore the grid with ``space.shape``). Discrete ``k``: the one-hot vector ``e_k``.
    MultiDiscrete: the concatenated one-hot vectors of its factors.

    An index outside ``[0, n)`` has no one-hot vector and becomes the zero vector (as in
    ``jax.nn.one_hot``): a compiled program cannot stop on a traced value, so an environment must
    keep its observations inside its space.
    """
    if isinstance(space, Discrete):
        return jax.nn.one_hot(jnp.reshape(obs, ()), space.n, dtype=jnp.float32)
    if isinstance(space, MultiDiscrete):
        obs = jnp.reshape(obs, (len(space.nvec),))
        return jnp.concatenate([jax.nn.one_hot(obs[i], n, dtype=jnp.float32)
                                for i, n in enumerate(space.nvec)])
    return jnp.reshape(obs, (-1,)).astype(jnp.float32)

"""The environment protocol: what an adapter provides, and the one place that resets episodes.

An **adapter** wraps one environment of some library as two pure functions of one environment
(no batch axis; the rollout vmaps them) and two space descriptors:

* ``reset(key) -> (obs, state)``
* ``transition(key, state, action) -> (obs, state, reward, terminated, truncated)``: one step,
  *without* resetting. ``terminated``: a terminal state was reached (its value is 0).
  ``truncated``: the adapter's own time limit cut the episode (the state still has a value);
  ``False`` when the adapter has none.
* ``observation_space``, ``action_space`` (:mod:`purejaxppo.envs.spaces`)
* ``max_episode_steps``: ``None``, or a time limit that :class:`Env` enforces with its own step
  counter (for adapters whose environment has none).
* optionally ``action_mask(state) -> bool[n]``: the actions valid in ``state`` (``n`` is the
  Discrete space's ``n``, or ``sum(nvec)`` for MultiDiscrete, the factors' masks one after
  another). The policy gives the others probability exactly 0
  (:class:`purejaxppo.distributions.MaskedCategorical`); the rollout stores the mask of every
  step so the update re-applies it to the new policy.
* optionally ``render(states) -> uint8[T, H, W, 3]``: RGB frames of a sequence of the adapter's
  states (a leading time axis on every leaf; host side, not traced). ``purejaxppo eval --gif``
  draws an episode with it.

:class:`Env` turns an adapter into what the rollout uses: flat float32 observations,
Box actions clipped to their bounds, the time limit, and auto-reset. Auto-reset lives here and
nowhere else, so every adapter returns the real last observation of an episode
(``final_obs``) and keeps ``terminated`` apart from ``truncated`` by construction.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from purejaxppo.envs import spaces

Array = jax.Array


@runtime_checkable
class Adapter(Protocol):
    """One environment as pure functions (see the module docstring)."""

    observation_space: spaces.Space
    action_space: spaces.Space
    max_episode_steps: int | None

    def reset(self, key: Array) -> tuple[Any, Any]: ...

    def transition(self, key: Array, state: Any, action: Array
                   ) -> tuple[Any, Any, Array, Array, Array]: ...


class TimedState(NamedTuple):
    """An adapter's state with the step counter of :attr:`Env.time_limit`."""

    inner: Any
    steps: Array


def _select(done: Array, reset: Any, stepped: Any) -> Any:
    """Per leaf: the reset value where ``done``, else the stepped one."""
    return jax.tree.map(lambda r, s: jnp.where(done, r, s), reset, stepped)


@dataclasses.dataclass(frozen=True, eq=False)
class Env:
    """An adapter made ready for the rollout: pure ``reset`` and auto-resetting ``step``.

    Both act on **one** environment; ``jax.vmap`` them for a batch. Observations are flat float32
    vectors of length :attr:`obs_size` (:func:`purejaxppo.envs.spaces.flatten`).
    """

    env_id: str
    """The id it was made from (``envs.make(env_id)``)."""
    adapter: Adapter
    """The wrapped environment."""
    time_limit: int | None = None
    """Steps after which this class truncates an episode (``adapter.max_episode_steps``)."""

    @property
    def observation_space(self) -> spaces.Space:
        return self.adapter.observation_space

    @property
    def action_space(self) -> spaces.Space:
        return self.adapter.action_space

    @property
    def obs_size(self) -> int:
        """Length of the flat observation."""
        return spaces.flat_size(self.observation_space)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of a raw observation: a Box's shape, ``(len(nvec),)`` for a MultiDiscrete one
        (one index per factor), ``()`` for a Discrete one."""
        space = self.observation_space
        if isinstance(space, spaces.MultiDiscrete):
            return (len(space.nvec),)
        return tuple(space.shape) if isinstance(space, spaces.Box) else ()

    @property
    def obs_parts(self) -> tuple[tuple[int, ...], ...]:
        """The shapes of the parts the flat observation joins, in its order: the adapter's
        optional ``observation_parts`` (a Jumanji observation's grid and scalars), else one
        part, :attr:`obs_shape`."""
        return tuple(getattr(self.adapter, "observation_parts", ()) or (self.obs_shape,))

    @property
    def discrete(self) -> bool:
        """True for Discrete and MultiDiscrete actions (a categorical policy, factorised for
        MultiDiscrete)."""
        return isinstance(self.action_space, (spaces.Discrete, spaces.MultiDiscrete))

    @property
    def action_size(self) -> int:
        """Number of actions (Discrete), of all factors' values (MultiDiscrete: ``sum(nvec)``, the
        number of logits) or action dimensions (Box)."""
        space = self.action_space
        return space.n if isinstance(space, spaces.Discrete) else spaces.flat_size(space)

    @property
    def action_nvec(self) -> tuple[int, ...]:
        """The MultiDiscrete factors' sizes; ``()`` for other action spaces."""
        space = self.action_space
        return tuple(space.nvec) if isinstance(space, spaces.MultiDiscrete) else ()

    @property
    def masked(self) -> bool:
        """True when the adapter provides ``action_mask(state)``."""
        return callable(getattr(self.adapter, "action_mask", None))

    def action_mask(self, state: Any) -> Array:
        """The valid actions of one environment's ``state`` (``bool[action_size]``); all True for an
        adapter without masks."""
        if not self.masked:
            return jnp.ones((self.action_size,), bool)
        inner = state.inner if self.time_limit is not None else state
        mask = jnp.asarray(self.adapter.action_mask(inner), bool)
        return jnp.reshape(mask, (self.action_size,))

    def flatten(self, obs: Any) -> Array:
        """One raw observation as the networks' float32 vector."""
        return spaces.flatten(self.observation_space, obs)

    def reset(self, key: Array) -> tuple[Array, Any]:
        """A new episode: ``(flat obs, state)``."""
        obs, state = self.adapter.reset(key)
        if self.time_limit is not None:
            state = TimedState(inner=state, steps=jnp.zeros((), jnp.int32))
        return self.flatten(obs), state

    def step(self, key: Array, state: Any, action: Array,
             reset: tuple[Array, Any] | None = None
             ) -> tuple[Array, Any, Array, Array, Array, Array]:
        """One step with auto-reset.

        Args:
            key: the step's randomness; split for the reset when ``reset`` is None.
            reset: a pre-drawn ``self.reset(k)``: the next episode's start if this one ends
                (drawing every reset of a rollout in one batched call is much cheaper than one
                call per step).

        Returns:
            ``(obs, state, reward, terminated, truncated, final_obs)``: ``final_obs`` is the
            observation the step ended in; ``obs`` and ``state`` are the next episode's first
            where the episode ended (terminated or truncated), and equal to ``final_obs`` and the
            stepped state elsewhere.
        """
        if reset is None:
            key, k_reset = jax.random.split(key)
            reset = self.reset(k_reset)
        space = self.action_space
        if isinstance(space, spaces.Box):
            low = jnp.asarray(space.low, jnp.float32).reshape(space.shape)
            high = jnp.asarray(space.high, jnp.float32).reshape(space.shape)
            action = jnp.clip(action, low, high)
        inner = state.inner if self.time_limit is not None else state
        obs, inner, reward, terminated, truncated = self.adapter.transition(key, inner, action)
        terminated, truncated = jnp.asarray(terminated, bool), jnp.asarray(truncated, bool)
        if self.time_limit is not None:
            steps = state.steps + 1
            truncated = truncated | (steps >= self.time_limit)
            inner = TimedState(inner=inner, steps=steps)
        final_obs = self.flatten(obs)
        done = terminated | truncated
        reset_obs, reset_state = reset
        return (jnp.where(done, reset_obs, final_obs), _select(done, reset_state, inner),
                jnp.asarray(reward, jnp.float32), terminated, truncated, final_obs)

    def state_nbytes(self) -> int:
        """Bytes of one ``reset`` result (what pre-drawing a reset costs in memory)."""
        shapes = jax.eval_shape(self.reset, jax.random.key(0))
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))

    def __repr__(self) -> str:
        return (f"Env({self.env_id!r}, observation {self.observation_space}, "
                f"action {self.action_space})")

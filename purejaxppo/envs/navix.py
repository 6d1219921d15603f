"""The Navix adapter: ``navix:NAME`` (``navix:Navix-Empty-5x5-v0``).

Navix's ``step`` resets an episode that has ended; the adapter steps with the environment's
``_step`` (no reset) and decodes its step type (``truncated + 2 * terminated``), so
``terminated`` (the goal reached) stays apart from ``truncated`` (its ``max_steps`` time limit)
and :class:`purejaxppo.envs.core.Env` resets, keeping the real last observation. Observations
(symbolic grids by default) are flattened to float32; actions are Discrete.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.envs import spaces, suites

Array = jax.Array


def registered_ids() -> list[str]:
    import navix

    return sorted(navix.registry())


@dataclasses.dataclass(frozen=True, eq=False)
class NavixAdapter:
    """An :class:`~purejaxppo.envs.core.Adapter` of one Navix environment."""

    env: Any
    observation_space: spaces.Space
    action_space: spaces.Space
    max_episode_steps: int | None = None
    """None: Navix's own ``max_steps`` is the time limit."""

    @property
    def episode_limit(self) -> int:
        return int(self.env.max_steps)

    def reset(self, key: Array) -> tuple[Array, Any]:
        timestep = self.env.reset(key)
        return timestep.observation, timestep

    def render(self, states: Any) -> np.ndarray:
        """``uint8[T, H, W, 3]``: Navix's fully observable RGB view of the grid, per state."""
        from navix.observations import rgb

        return np.asarray(jax.jit(jax.vmap(rgb))(states.state), np.uint8)

    def transition(self, key: Array, state: Any, action: Array):
        del key  # Navix carries its key in the state
        timestep = self.env._step(state, action)
        step_type = jnp.asarray(timestep.step_type, jnp.int32)
        terminated = step_type >= 2
        truncated = (step_type % 2 == 1) & ~terminated
        return (timestep.observation, timestep, jnp.asarray(timestep.reward, jnp.float32),
                terminated, truncated)


def make(name: str, env_id: str = "") -> NavixAdapter:
    """The adapter of Navix's ``name``.

    Raises:
        ValueError: an unknown name (with the close ones).
    """
    import navix

    known = registered_ids()
    if name not in known:
        raise suites.unknown_name("navix", name, known)
    env = navix.make(name)
    obs = env.observation_space
    low = np.broadcast_to(np.asarray(obs.minimum, np.float32), obs.shape)
    high = np.broadcast_to(np.asarray(obs.maximum, np.float32), obs.shape)
    n = int(np.asarray(env.action_space.maximum)) - int(np.asarray(env.action_space.minimum)) + 1
    return NavixAdapter(env, spaces.Box.of(tuple(obs.shape), low, high), spaces.Discrete(n))

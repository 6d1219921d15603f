"""The XLand-MiniGrid adapter: ``xminigrid:NAME`` (``xminigrid:MiniGrid-Empty-5x5``).

An xminigrid environment's ``step`` does not reset; an episode ends with ``discount == 0`` when
the goal is reached (termination) and with ``discount == 1`` at its ``max_steps`` time limit
(truncation); :class:`purejaxppo.envs.core.Env` resets, keeping the real last observation.
Observations (``[view, view, 2]`` integer grids) are flattened to float32; actions are
Discrete. The ``XLand-MiniGrid-*`` ids train on their default (fixed) ruleset; benchmark
rulesets need ``xminigrid.load_benchmark``, a download, and are not loaded here.
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
    import xminigrid

    return sorted(xminigrid.registered_environments())


@dataclasses.dataclass(frozen=True, eq=False)
class XMiniGridAdapter:
    """An :class:`~purejaxppo.envs.core.Adapter` of one xminigrid environment and its params."""

    env: Any
    params: Any
    observation_space: spaces.Space
    action_space: spaces.Space
    max_episode_steps: int | None = None
    """None: the params' ``max_steps`` is the time limit."""

    @property
    def episode_limit(self) -> int:
        return int(self.params.max_steps)

    def reset(self, key: Array) -> tuple[Array, Any]:
        timestep = self.env.reset(self.params, key)
        return timestep.observation, timestep

    def render(self, states: Any) -> np.ndarray:
        """``uint8[T, H, W, 3]``: xminigrid's RGB drawing of the whole grid, per state."""
        params = self.params.replace(render_mode="rgb_array")
        frames = [self.env.render(params, jax.tree.map(lambda x, t=t: x[t], states))
                  for t in range(len(jax.tree.leaves(states)[0]))]
        return np.stack(frames).astype(np.uint8)

    def transition(self, key: Array, state: Any, action: Array):
        del key  # xminigrid carries its key in the state
        timestep = self.env.step(self.params, state, action)
        last = timestep.last()
        terminated = last & (timestep.discount == 0)
        return (timestep.observation, timestep, jnp.asarray(timestep.reward, jnp.float32),
                terminated, last & ~terminated)


def make(name: str, env_id: str = "") -> XMiniGridAdapter:
    """The adapter of xminigrid's ``name`` with its default params.

    Raises:
        ValueError: an unknown name (with the close ones).
    """
    import xminigrid

    known = registered_ids()
    if name not in known:
        raise suites.unknown_name("xminigrid", name, known)
    env, params = xminigrid.make(name)
    shape = tuple(int(s) for s in env.observation_shape(params))
    return XMiniGridAdapter(env, params, spaces.Box.of(shape, 0.0),
                            spaces.Discrete(int(env.num_actions(params))))

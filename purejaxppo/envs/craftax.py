"""The Craftax adapter: ``craftax:NAME`` (``craftax:Craftax-Classic-Symbolic-v1``).

The environments are made without auto-reset (``auto_reset=False``); the adapter steps them
with ``step_env`` and splits Craftax's ``done``: ``terminated`` when the episode ended without
the time limit (death, lava, the game won), ``truncated`` when only the time limit
(``params.max_timesteps``) ended it. :class:`purejaxppo.envs.core.Env` resets, so ``final_obs``
is the real last observation. Symbolic observations are already flat float32; pixel ones are
flattened (``network="cnn"`` restores them only for a Box of 3 dimensions).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.envs import spaces, suites

Array = jax.Array

IDS = ("Craftax-Classic-Symbolic-v1", "Craftax-Classic-Pixels-v1", "Craftax-Symbolic-v1",
       "Craftax-Pixels-v1")
"""The ids ``craftax.craftax_env.make_craftax_env_from_name`` takes."""


RENDER_BLOCK_PIXELS = 16
"""Pixels per block of a ``--gif`` frame (Craftax's own image size)."""


def registered_ids() -> list[str]:
    return list(IDS)


@dataclasses.dataclass(frozen=True, eq=False)
class CraftaxAdapter:
    """An :class:`~purejaxppo.envs.core.Adapter` of one Craftax environment and its params."""

    env: Any
    params: Any
    observation_space: spaces.Space
    action_space: spaces.Space
    max_episode_steps: int | None = None
    """None: Craftax's own ``max_timesteps`` is the time limit (see the module docstring)."""

    @property
    def episode_limit(self) -> int:
        return int(self.params.max_timesteps)

    def reset(self, key: Array) -> tuple[Array, Any]:
        return self.env.reset_env(key, self.params)

    def render(self, states: Any) -> np.ndarray:
        """``uint8[T, H, W, 3]``: Craftax's own pixel renderer (16-pixel blocks), per state."""
        if "Classic" in type(self.env).__name__:
            from craftax.craftax_classic.renderer import make_craftax_pixel_renderer
        else:
            from craftax.craftax.renderer import make_craftax_pixel_renderer
        draw = jax.jit(jax.vmap(make_craftax_pixel_renderer(RENDER_BLOCK_PIXELS)))
        return np.clip(np.asarray(draw(states)), 0, 255).astype(np.uint8)

    def transition(self, key: Array, state: Any, action: Array):
        obs, state, reward, done, _ = self.env.step_env(key, state, action, self.params)
        # The same end test without the time limit: what ended the episode besides the clock.
        unlimited = self.params.replace(max_timesteps=jnp.iinfo(jnp.int32).max)
        terminated = jnp.asarray(self.env.is_terminal(state, unlimited), bool)
        return obs, state, reward, terminated, jnp.asarray(done, bool) & ~terminated


def _space(space: Any) -> spaces.Space:
    if hasattr(space, "n"):
        return spaces.Discrete(int(space.n))
    return spaces.Box.of(tuple(space.shape), np.asarray(space.low), np.asarray(space.high))


def make(name: str, env_id: str = "") -> CraftaxAdapter:
    """The adapter of Craftax's ``name`` with its default params.

    Raises:
        ValueError: an unknown name (with the close ones).
    """
    from craftax.craftax_env import make_craftax_env_from_name

    if name not in IDS:
        raise suites.unknown_name("craftax", name, list(IDS))
    env = make_craftax_env_from_name(name, auto_reset=False)
    params = env.default_params
    return CraftaxAdapter(env, params, _space(env.observation_space(params)),
                          _space(env.action_space(params)))

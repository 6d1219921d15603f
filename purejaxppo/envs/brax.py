"""The Brax adapter: ``brax:NAME`` (``brax:ant``), or ``brax:NAME@BACKEND`` for another physics
backend (``brax:ant@generalized``).

Brax environments (``brax.envs``) have no time limit and no auto-reset of their own: those are
wrappers (``EpisodeWrapper``, ``AutoResetWrapper``) that the adapter leaves out. Its
``max_episode_steps`` (1000, Brax's ``episode_length`` default) is enforced by
:class:`purejaxppo.envs.core.Env`, which also resets, so ``final_obs`` is the real last
observation (Brax's ``AutoResetWrapper`` writes the reset observation over it). ``terminated``:
Brax's ``done`` (e.g. the ant is unhealthy). Actions: ``Box[-1, 1]^action_size``.

The default backend is ``positional``, the one Brax's PPO training examples use for the
locomotion tasks; ``spring`` is faster, ``generalized`` and ``mjx`` more accurate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from purejaxppo.envs import spaces, suites

Array = jax.Array

DEFAULT_BACKEND = "positional"
BACKENDS = ("positional", "spring", "generalized", "mjx")
EPISODE_LENGTH = 1000
"""Brax's ``episode_length`` default (``brax.envs.create``, Brax PPO's published settings)."""


def registered_ids() -> list[str]:
    """Brax's environment names."""
    from brax import envs as brax_envs

    return sorted(brax_envs._envs)


@dataclasses.dataclass(frozen=True, eq=False)
class BraxAdapter:
    """An :class:`~purejaxppo.envs.core.Adapter` of one Brax environment."""

    env: Any
    observation_space: spaces.Space
    action_space: spaces.Space
    max_episode_steps: int | None = EPISODE_LENGTH

    def reset(self, key: Array) -> tuple[Array, Any]:
        state = self.env.reset(key)
        return state.obs, state

    def transition(self, key: Array, state: Any, action: Array):
        del key  # Brax environments draw their noise from the state
        state = self.env.step(state, action)
        return (state.obs, state, state.reward, state.done > 0.5, jnp.zeros((), bool))


def make(name: str, env_id: str = "") -> BraxAdapter:
    """The adapter of ``NAME`` or ``NAME@BACKEND``.

    Raises:
        ValueError: an unknown name (with the close ones) or backend.
    """
    from brax import envs as brax_envs

    base, _, backend = name.partition("@")
    backend = backend or DEFAULT_BACKEND
    known = registered_ids()
    if base not in known:
        raise suites.unknown_name("brax", base, known)
    if backend not in BACKENDS:
        raise ValueError(f"unknown Brax backend {backend!r} in {env_id or name!r}: give "
                         f"brax:{base}@BACKEND with one of {', '.join(BACKENDS)}")
    env = brax_envs.get_environment(base, backend=backend)
    return BraxAdapter(env, spaces.Box.of((env.observation_size,)),
                       spaces.Box.of((env.action_size,), -1.0, 1.0))

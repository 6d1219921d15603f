"""The MuJoCo Playground adapter: ``playground:NAME`` for the DM Control suite tasks
(``playground:CartpoleBalance``), which ship their models and need no asset download.

Playground environments (``mujoco_playground.registry``) step without a time limit or auto-reset
of their own (those are Brax-style wrappers the adapter leaves out); the adapter's
``max_episode_steps`` is the task's ``episode_length`` (1000), enforced with auto-reset by
:class:`purejaxppo.envs.core.Env`, so ``final_obs`` is the real last observation. ``terminated``:
the task's ``done``. Physics through MJX's JAX implementation (``impl="jax"``, pure JAX, so it
jits and vmaps on any device); actions ``Box[-1, 1]^action_size``. Dict observations are
concatenated (:func:`purejaxppo.envs.suites.flat_concat`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from purejaxppo.envs import spaces, suites

Array = jax.Array


def registered_ids() -> list[str]:
    """The DM Control suite tasks (the Playground tasks that need no asset download)."""
    from mujoco_playground import registry

    return list(registry.dm_control_suite.ALL_ENVS)


@dataclasses.dataclass(frozen=True, eq=False)
class PlaygroundAdapter:
    """An :class:`~purejaxppo.envs.core.Adapter` of one Playground environment."""

    env: Any
    observation_space: spaces.Space
    action_space: spaces.Space
    max_episode_steps: int | None

    def reset(self, key: Array) -> tuple[Array, Any]:
        state = self.env.reset(key)
        return suites.flat_concat(state.obs), state

    def transition(self, key: Array, state: Any, action: Array):
        del key  # Playground environments draw their noise from the state
        state = self.env.step(state, action)
        return (suites.flat_concat(state.obs), state, state.reward, state.done > 0.5,
                jnp.zeros((), bool))


def make(name: str, env_id: str = "") -> PlaygroundAdapter:
    """The adapter of the DM Control suite task ``name``.

    Raises:
        ValueError: a name that is not a DM Control suite task (with the close ones).
    """
    from mujoco_playground import registry

    known = registered_ids()
    if name not in known:
        raise suites.unknown_name("playground", name, known,
                                  " (the locomotion and manipulation tasks download assets at "
                                  "run time and are not supported)")
    config = registry.get_default_config(name)
    with suites.physics_loading():
        env = registry.load(name, config_overrides={"impl": "jax"})
    adapter = PlaygroundAdapter(env, spaces.Box.of((1,)), spaces.Box.of((env.action_size,),
                                                                        -1.0, 1.0),
                                int(config.episode_length))
    size = suites.flat_size(adapter.reset)
    return dataclasses.replace(adapter, observation_space=spaces.Box.of((size,)))

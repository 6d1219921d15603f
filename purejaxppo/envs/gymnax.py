"""The gymnax adapter: any environment with gymnax's API (``gymnax.environments.Environment``).

gymnax 1.x splits an environment into ``reset_env``/``step_env`` (no auto-reset) and
``is_truncated`` (its time limit, ``state.time >= params.max_steps_in_episode``); ``step``
adds auto-reset on top. The adapter takes the parts and leaves auto-reset to
:class:`purejaxppo.envs.core.Env`, so the terminal observation of a time-limited episode is kept.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from purejaxppo.envs import spaces

Array = jax.Array

NEEDS_DOWNLOAD = {"MNISTBandit-bsuite": "downloads the MNIST data set when created"}


def registered_ids() -> list[str]:
    """gymnax's environment ids that train without a download."""
    import gymnax

    return [e for e in gymnax.registered_envs if e not in NEEDS_DOWNLOAD]


def convert_space(space: Any, what: str, env_id: str) -> spaces.Space:
    """A gymnax space as a :mod:`purejaxppo.envs.spaces` descriptor.

    Raises:
        ValueError: for a space kind purejaxppo cannot train on (naming it).
    """
    from gymnax.environments import spaces as gspaces

    if isinstance(space, gspaces.Discrete):
        return spaces.Discrete(int(space.n))
    if isinstance(space, gspaces.Box):
        return spaces.Box.of(tuple(space.shape), np.asarray(space.low), np.asarray(space.high))
    raise ValueError(f"environment {env_id!r} has a {type(space).__name__} {what} space; "
                     "purejaxppo trains on Box and Discrete spaces")


@dataclasses.dataclass(frozen=True, eq=False)
class GymnaxAdapter:
    """An :class:`~purejaxppo.envs.core.Adapter` of a gymnax-API environment and its params."""

    env: Any
    """The gymnax ``Environment``."""
    params: Any
    """Its ``EnvParams`` (the default ones unless given)."""
    observation_space: spaces.Space
    action_space: spaces.Space
    max_episode_steps: int | None = None
    """None: the environment's own ``is_truncated`` is its time limit."""

    @staticmethod
    def of(env: Any, params: Any = None, env_id: str = "") -> GymnaxAdapter:
        """The adapter of ``env`` with ``params`` (default: ``env.default_params``)."""
        params = env.default_params if params is None else params
        return GymnaxAdapter(env, params,
                             convert_space(env.observation_space(params), "observation", env_id),
                             convert_space(env.action_space(params), "action", env_id))

    @property
    def episode_limit(self) -> int | None:
        """The environment's time limit, if its params have ``max_steps_in_episode``."""
        limit = getattr(self.params, "max_steps_in_episode", None)
        return None if limit is None else int(limit)

    def reset(self, key: Array) -> tuple[Any, Any]:
        return self.env.reset_env(key, self.params)

    def transition(self, key: Array, state: Any, action: Array):
        obs, state, reward, terminated, _ = self.env.step_env(key, state, action, self.params)
        return obs, state, reward, terminated, self.env.is_truncated(state, self.params)


def make(env_id: str) -> GymnaxAdapter:
    """The adapter of gymnax's ``env_id`` with its default params.

    Raises:
        ValueError: the id needs a download or is not gymnax's.
    """
    if env_id in NEEDS_DOWNLOAD:
        raise ValueError(f"environment {env_id!r} is not supported: it {NEEDS_DOWNLOAD[env_id]}; "
                         "pick one that needs no download")
    import gymnax

    env, params = gymnax.make(env_id)
    return GymnaxAdapter.of(env, params, env_id)


def is_gymnax_env(obj: Any) -> bool:
    """True for an instance of gymnax's ``Environment``."""
    from gymnax.environments.environment import Environment

    return isinstance(obj, Environment)

"""Environments: gymnax 1.x, checked once on the host, then stepped as pure functions.

gymnax's ``step`` auto-resets: on the step that ends an episode it returns the *reset*
observation, and the last observation of the finished episode in ``info["final_observation"]``.
``terminated`` (a true terminal state: value 0) and ``truncated`` (time limit: the episode was
cut, the state still has value) are returned apart; both may be true at once.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import gymnax
import jax
import jax.numpy as jnp
from gymnax.environments import spaces

Array = jax.Array

NEEDS_DOWNLOAD = {"MNISTBandit-bsuite": "downloads the MNIST data set when created"}


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """What the networks and the rollout need to know about an environment."""

    env: Any
    """The gymnax environment object."""
    params: Any
    """Its default ``EnvParams``."""
    obs_size: int
    """Length of the flattened observation."""
    discrete: bool
    """True for Discrete actions (categorical policy), False for Box (diagonal Gaussian)."""
    action_size: int
    """Number of actions (Discrete) or action dimensions (Box)."""
    action_low: Any = None
    """Lower bounds of a Box action space (actions are clipped to them for the env)."""
    action_high: Any = None
    """Upper bounds of a Box action space."""


def _unknown_env_message(env_id: str) -> str:
    close = difflib.get_close_matches(env_id, gymnax.registered_envs, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (f"unknown environment {env_id!r}.{hint} Available gymnax environments: "
            f"{', '.join(e for e in gymnax.registered_envs if e not in NEEDS_DOWNLOAD)}")


def make_env(env_id: str) -> EnvSpec:
    """Creates a gymnax environment and checks that purejaxppo can train on it.

    Raises:
        ValueError: for an unknown id (with close names), an environment that needs a download,
            or an unsupported observation or action space.
    """
    if env_id in NEEDS_DOWNLOAD:
        raise ValueError(f"environment {env_id!r} is not supported: it {NEEDS_DOWNLOAD[env_id]}; "
                         "pick one that needs no download")
    if env_id not in gymnax.registered_envs:
        raise ValueError(_unknown_env_message(env_id))
    env, params = gymnax.make(env_id)
    obs_space = env.observation_space(params)
    if not isinstance(obs_space, spaces.Box):
        raise ValueError(f"environment {env_id!r} has a {type(obs_space).__name__} observation "
                         "space; purejaxppo supports Box (array) observations only")
    obs_size = int(jnp.prod(jnp.asarray(obs_space.shape))) if obs_space.shape else 1
    action_space = env.action_space(params)
    if isinstance(action_space, spaces.Discrete):
        return EnvSpec(env, params, obs_size, True, int(action_space.n))
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        low = jnp.broadcast_to(jnp.asarray(action_space.low, jnp.float32), action_space.shape)
        high = jnp.broadcast_to(jnp.asarray(action_space.high, jnp.float32), action_space.shape)
        return EnvSpec(env, params, obs_size, False, int(action_space.shape[0]), low, high)
    raise ValueError(f"environment {env_id!r} has a {type(action_space).__name__} action space "
                     f"{action_space}; purejaxppo supports Discrete and 1-D Box actions")


def flatten_obs(obs: Array) -> Array:
    """One float32 vector per environment (MinAtar's 10x10xC grids become 100*C features)."""
    return jnp.reshape(obs, (-1,)).astype(jnp.float32)


def reset(spec: EnvSpec, keys: Array) -> tuple[Array, Any]:
    """Resets ``len(keys)`` environments: ``(obs [N, obs_size], env_state)``."""
    obs, state = jax.vmap(spec.env.reset, in_axes=(0, None))(keys, spec.params)
    return jax.vmap(flatten_obs)(obs), state


def step(spec: EnvSpec, keys: Array, state: Any, actions: Array):
    """Steps ``N`` environments with auto-reset.

    Returns:
        ``(obs, state, reward, terminated, truncated, final_obs)``, where ``obs`` is the reset
        observation where an episode ended and ``final_obs`` is the observation the episode ended
        in (equal to ``obs`` elsewhere). Observations are flat float32.
    """
    if not spec.discrete:
        actions = jnp.clip(actions, spec.action_low, spec.action_high)
    obs, state, reward, terminated, truncated, info = jax.vmap(
        spec.env.step, in_axes=(0, 0, 0, None)
    )(keys, state, actions, spec.params)
    flat = jax.vmap(flatten_obs)
    return (flat(obs), state, reward.astype(jnp.float32), terminated, truncated,
            flat(info["final_observation"]))

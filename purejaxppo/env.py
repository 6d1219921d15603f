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

import jax
import jax.numpy as jnp

# gymnax is imported where it is used: importing it runs JAX code (which fixes JAX's devices
# before purejaxppo.parallel.use_cpu_cores could set them) and loads its plotting libraries.

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
    obs_categories: int = 0
    """For a Discrete observation space, its number of values (observations are one-hot
    encoded); 0 for Box observations."""

    def flatten(self, obs: Array) -> Array:
        """One environment's observation as the networks' float32 vector (see :func:`flatten_obs`)."""
        return flatten_obs(obs, self.obs_categories)


def _unknown_env_message(env_id: str) -> str:
    import gymnax

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
    import gymnax
    from gymnax.environments import spaces

    if env_id not in gymnax.registered_envs:
        raise ValueError(_unknown_env_message(env_id))
    env, params = gymnax.make(env_id)
    obs_space = env.observation_space(params)
    categories = 0
    if isinstance(obs_space, spaces.Discrete):  # e.g. FrozenLake-misc: the cell index
        categories = obs_size = int(obs_space.n)
    elif isinstance(obs_space, spaces.Box):
        obs_size = int(jnp.prod(jnp.asarray(obs_space.shape))) if obs_space.shape else 1
    else:
        raise ValueError(f"environment {env_id!r} has a {type(obs_space).__name__} observation "
                         "space; purejaxppo supports Box (array) and Discrete observations")
    action_space = env.action_space(params)
    if isinstance(action_space, spaces.Discrete):
        return EnvSpec(env, params, obs_size, True, int(action_space.n),
                       obs_categories=categories)
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        low = jnp.broadcast_to(jnp.asarray(action_space.low, jnp.float32), action_space.shape)
        high = jnp.broadcast_to(jnp.asarray(action_space.high, jnp.float32), action_space.shape)
        return EnvSpec(env, params, obs_size, False, int(action_space.shape[0]), low, high,
                       obs_categories=categories)
    raise ValueError(f"environment {env_id!r} has a {type(action_space).__name__} action space "
                     f"{action_space}; purejaxppo supports Discrete and 1-D Box actions")


def flatten_obs(obs: Array, categories: int = 0) -> Array:
    """One float32 vector per environment observation.

    Box observations are flattened (MinAtar's 10x10xC grids become 100*C features); a Discrete
    observation ``k`` of ``categories`` values becomes the one-hot vector ``e_k``.
    """
    if categories:
        return jax.nn.one_hot(jnp.reshape(obs, ()), categories, dtype=jnp.float32)
    return jnp.reshape(obs, (-1,)).astype(jnp.float32)


def reset(spec: EnvSpec, keys: Array) -> tuple[Array, Any]:
    """Resets ``len(keys)`` environments: ``(obs [N, obs_size], env_state)``."""
    obs, state = jax.vmap(spec.env.reset, in_axes=(0, None))(keys, spec.params)
    return jax.vmap(spec.flatten)(obs), state


def reset_batch(spec: EnvSpec, keys: Array) -> tuple[Array, Any]:
    """Reset observations (flat) and states for a batch of keys of any shape."""

    def one(key: Array) -> tuple[Array, Any]:
        obs, state = spec.env.reset_env(key, spec.params)
        return spec.flatten(obs), state

    fn = one
    for _ in range(keys.ndim):
        fn = jax.vmap(fn)
    return fn(keys)


def reset_nbytes(spec: EnvSpec) -> int:
    """Bytes of one reset ``(obs, state)`` (what pre-drawing a reset costs in memory)."""
    shapes = jax.eval_shape(spec.env.reset_env, jax.random.key(0), spec.params)
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def _select(done: Array, reset: Any, stepped: Any) -> Any:
    def pick(r: Array, s: Array) -> Array:
        return jnp.where(jnp.reshape(done, done.shape + (1,) * (s.ndim - done.ndim)), r, s)

    return jax.tree.map(pick, reset, stepped)


def own_autoreset(spec: EnvSpec) -> bool:
    """True when the env uses gymnax's generic ``step`` (so its auto-reset can be done here)."""
    from gymnax.environments.environment import Environment

    return type(spec.env).step is Environment.step


def step(spec: EnvSpec, keys: Array, state: Any, actions: Array,
         reset: tuple[Array, Any] | None = None):
    """Steps ``N`` environments with auto-reset.

    ``reset``, when given, holds a pre-drawn reset ``(obs, state)`` per environment: an episode
    that ends is replaced by it. Drawing every reset of a rollout in one batched call before the
    step loop is much cheaper than gymnax's per-step reset (two RNG calls per step). Environments
    that override gymnax's ``step`` always use their own.

    Returns:
        ``(obs, state, reward, terminated, truncated, final_obs)``, where ``obs`` is the reset
        observation where an episode ended and ``final_obs`` is the observation the episode ended
        in (equal to ``obs`` elsewhere). Observations are flat float32.
    """
    if not spec.discrete:
        actions = jnp.clip(actions, spec.action_low, spec.action_high)
    flat = jax.vmap(spec.flatten)
    if reset is None or not own_autoreset(spec):
        obs, state, reward, terminated, truncated, info = jax.vmap(
            spec.env.step, in_axes=(0, 0, 0, None)
        )(keys, state, actions, spec.params)
        return (flat(obs), state, reward.astype(jnp.float32), terminated, truncated,
                flat(info["final_observation"]))
    env, params = spec.env, spec.params
    obs_st, state_st, reward, terminated, _ = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))(
        keys, state, actions, params)
    truncated = jax.vmap(env.is_truncated, in_axes=(0, None))(state_st, params)
    terminated, truncated = jnp.asarray(terminated, bool), jnp.asarray(truncated, bool)
    done = terminated | truncated
    final_obs = flat(obs_st)
    reset_obs, reset_state = reset
    return (jnp.where(done[:, None], reset_obs, final_obs), _select(done, reset_state, state_st),
            reward.astype(jnp.float32), terminated, truncated, final_obs)

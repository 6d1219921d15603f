"""Environments: one protocol, adapters for environment libraries, and a registry of ids.

    from purejaxppo import envs

    env = envs.make("CartPole-v1")            # gymnax ids, bare or as "gymnax:CartPole-v1"
    env = envs.make("brax:ant")               # a suite's: brax: playground: jumanji: craftax:
                                              # navix: xminigrid: (see .suites; one extra each)
    envs.register("MyEnv-v0", MyEnv)          # your own: then PPOConfig(env="MyEnv-v0") trains

``make`` returns an :class:`Env`, the only thing the rollout uses (see :mod:`.core` for the
protocol). ``register(name, factory)`` takes a factory returning either a gymnax-API environment
(an instance of gymnax's ``Environment``; its default params, and their
``max_steps_in_episode`` as the time limit) or an :class:`Adapter`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from purejaxppo.envs import gymnax as gymnax_adapter
from purejaxppo.envs import suites
from purejaxppo.envs.core import Adapter, Env, TimedState
from purejaxppo.envs.spaces import Box, Discrete, MultiDiscrete, Space

__all__ = ["Adapter", "Box", "Discrete", "Env", "MultiDiscrete", "Space", "TimedState", "make",
           "register", "registered", "unregister"]

GYMNAX_PREFIX = "gymnax:"

_REGISTRY: dict[str, tuple[Callable[[], Any], int | None]] = {}
_SUITE_ENVS: dict[str, Env] = {}
"""The suite environments made so far, by id: building one compiles its model (Brax, MuJoCo
Playground: ~0.2-0.4 s each time), and one run asks for its environment several times."""


def register(name: str, factory: Callable[[], Any], *, max_episode_steps: int | None = None
             ) -> None:
    """Makes ``PPOConfig(env=name)`` build ``factory()`` everywhere (training, sweeps, eval).

    Args:
        name: the id; it must not be a gymnax id (those are taken).
        factory: no arguments; returns a gymnax-API environment or an :class:`Adapter`.
        max_episode_steps: the time limit of an adapter (truncation, not termination), in place
            of its own ``max_episode_steps`` when given. A gymnax-API environment takes its
            params' ``max_steps_in_episode``.

    Re-registering a name replaces it (convenient in notebooks).

    Raises:
        ValueError: an empty name, a name gymnax uses, a factory that is not callable, or a
            non-positive time limit.
    """
    if not isinstance(name, str) or not name or name.startswith(GYMNAX_PREFIX):
        raise ValueError(f"environment name {name!r} is invalid: give a non-empty id that does "
                         f"not start with {GYMNAX_PREFIX!r}")
    if name in gymnax_adapter.registered_ids():
        raise ValueError(f"environment name {name!r} is gymnax's; register yours under another")
    if not callable(factory):
        raise ValueError(f"the factory of {name!r} must be callable (a class or a function "
                         f"returning the environment), got {factory!r}")
    if max_episode_steps is not None and not _is_step_count(max_episode_steps):
        raise ValueError(f"max_episode_steps={max_episode_steps!r} is invalid: give a positive "
                         "number of steps, or None")
    _REGISTRY[name] = (factory, max_episode_steps)


def _is_step_count(value: Any) -> bool:
    """A positive whole number of steps (an int, or a float or NumPy scalar that is one)."""
    value = value.item() if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 else value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value >= 1 and int(value) == value


def unregister(name: str) -> None:
    """Forgets a registered id (no error if it was not registered)."""
    _REGISTRY.pop(name, None)


def registered() -> list[str]:
    """Every id :func:`make` accepts: the registered ones, then gymnax's."""
    return [*_REGISTRY, *gymnax_adapter.registered_ids()]


def unknown_env_message(env_id: str) -> str:
    """One line: the id is unknown, the closest known ids, and every id."""
    known = registered()
    close = difflib.get_close_matches(env_id.removeprefix(GYMNAX_PREFIX), known, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (f"unknown environment {env_id!r}.{hint} Available environments: {', '.join(known)} "
            "(register your own with purejaxppo.envs.register)")


def _adapt(obj: Any, env_id: str, max_episode_steps: int | None) -> Env:
    if gymnax_adapter.is_gymnax_env(obj):
        return Env(env_id, gymnax_adapter.GymnaxAdapter.of(obj, env_id=env_id))
    if isinstance(obj, Adapter):
        limit = obj.max_episode_steps if max_episode_steps is None else max_episode_steps
        if limit is not None and not _is_step_count(limit):
            raise ValueError(f"the adapter of {env_id!r} has max_episode_steps={limit!r}: give a "
                             "positive whole number of steps, or None for no time limit")
        return Env(env_id, obj, None if limit is None else int(limit))
    raise ValueError(f"the factory of {env_id!r} returned a {type(obj).__name__}: it must return "
                     "a gymnax Environment or a purejaxppo.envs.Adapter (reset, transition, "
                     "observation_space, action_space, max_episode_steps)")


def make(env_id: str) -> Env:
    """The environment of ``env_id``, checked: its spaces are ones purejaxppo trains on.

    Ids: a registered one, a gymnax id (bare or ``gymnax:``), or ``SUITE:NAME`` for the suites
    of :mod:`purejaxppo.envs.suites` (each needs its extra, ``pip install 'purejaxppo[SUITE]'``).

    A suite's environment is made once per process and the same (immutable) object returned
    after that; a registered factory is called every time.

    Raises:
        ValueError: an unknown id (with the closest known ids), an unknown suite prefix (with the
            close ones), a suite whose package is missing (with the ``pip install``), an
            environment that needs a download, or one whose observation or action space is not
            supported (naming it).
    """
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"environment id {env_id!r} is invalid: give an id such as "
                         "'CartPole-v1'")
    if env_id in _SUITE_ENVS and env_id not in _REGISTRY:
        return _SUITE_ENVS[env_id]
    parts = suites.split_id(env_id)
    if env_id in _REGISTRY:
        factory, limit = _REGISTRY[env_id]
        env = _adapt(factory(), env_id, limit)
    elif parts is not None and parts[0] != GYMNAX_PREFIX[:-1]:
        prefix, name = parts
        env = _adapt(suites.adapter_module(prefix).make(name, env_id), env_id, None)
    else:
        name = env_id.removeprefix(GYMNAX_PREFIX)
        if name not in gymnax_adapter.NEEDS_DOWNLOAD and name not in registered():
            raise ValueError(unknown_env_message(env_id))
        env = Env(env_id, gymnax_adapter.make(name))
    check_spaces(env)
    if env_id in _REGISTRY:  # a user's adapter: does it return what its spaces declare?
        check_dynamics(env)
    elif parts is not None and parts[0] != GYMNAX_PREFIX[:-1]:
        _SUITE_ENVS[env_id] = env
    return env


def check_dynamics(env: Env) -> None:
    """Raises a ``ValueError`` unless ``env``'s adapter returns what its spaces declare.

    Traced once (``jax.eval_shape``, nothing computed): ``reset`` and ``transition`` (from the
    reset state, with an action of the action space's shape and dtype) must give observations
    of the observation space's size, scalar reward, ``terminated`` and ``truncated``, and a
    state of the same structure, shapes and dtypes as ``reset``'s (a step's state replaces a
    reset one where an episode ends). Run by :func:`make` for registered environments.
    """
    adapter, where = env.adapter, f"environment {env.env_id!r}"
    space, act = env.observation_space, env.action_space
    want_size = (1 if isinstance(space, Discrete) else len(space.nvec)
                 if isinstance(space, MultiDiscrete) else math.prod(space.shape))
    if isinstance(act, Box):
        action = jax.ShapeDtypeStruct(tuple(act.shape), jnp.float32)
    elif isinstance(act, MultiDiscrete):
        action = jax.ShapeDtypeStruct((len(act.nvec),), jnp.int32)
    else:
        action = jax.ShapeDtypeStruct((), jnp.int32)

    def step(key: Any) -> tuple:
        state = adapter.reset(key)[1]
        return adapter.transition(key, state, jnp.zeros(action.shape, action.dtype))

    # An error raised by the adapter's own code propagates as it is (its type and its line).
    obs, state = jax.eval_shape(adapter.reset, jax.random.key(0))
    out = jax.eval_shape(step, jax.random.key(0))
    if not isinstance(out, tuple) or len(out) != 5:
        raise ValueError(f"{where}: transition must return (obs, state, reward, terminated, "
                         f"truncated), got {type(out).__name__} of "
                         f"{len(out) if isinstance(out, tuple) else 1}")
    next_obs, next_state, *flags = out
    for name, value in (("reset", obs), ("transition", next_obs)):
        size = math.prod(getattr(value, "shape", (-1,)))
        if size != want_size:
            raise ValueError(f"{where}: {name} returns an observation of shape "
                             f"{list(getattr(value, 'shape', ()))}, but its observation space "
                             f"{space} has {want_size} values")
    for name, value in zip(("reward", "terminated", "truncated"), flags, strict=True):
        if math.prod(getattr(value, "shape", ())) != 1:
            raise ValueError(f"{where}: transition's {name} has shape "
                             f"{list(value.shape)}: one environment's must be a scalar")
    if jax.tree.structure(state) != jax.tree.structure(next_state):
        raise ValueError(f"{where}: transition returns a state of another structure than "
                         f"reset's ({jax.tree.structure(next_state)} against "
                         f"{jax.tree.structure(state)}); return the same fields")
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    for (path, a), b in zip(leaves, jax.tree.leaves(next_state), strict=True):
        if (tuple(a.shape), a.dtype) != (tuple(b.shape), b.dtype):
            raise ValueError(f"{where}: the state's field {jax.tree_util.keystr(path) or '.'} is "
                             f"{b.dtype}{list(b.shape)} after transition but "
                             f"{a.dtype}{list(a.shape)} after reset; keep them equal (a step's "
                             "state replaces a reset one where an episode ends)")


def check_spaces(env: Env) -> None:
    """Raises a ``ValueError`` naming a space purejaxppo cannot train on."""
    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, (Box, Discrete, MultiDiscrete)):
        raise ValueError(f"environment {env.env_id!r} has an observation space {obs!r}; "
                         "purejaxppo trains on Box, Discrete and MultiDiscrete observations")
    if isinstance(act, Box) and len(act.shape) != 1:
        raise ValueError(f"environment {env.env_id!r} has a Box action space of shape "
                         f"{act.shape}; purejaxppo trains on 1-D Box actions")
    if isinstance(act, MultiDiscrete) and (not act.nvec or min(act.nvec) < 1):
        raise ValueError(f"environment {env.env_id!r} has a MultiDiscrete action space "
                         f"{act.nvec}; every factor needs at least one value")
    if not isinstance(act, (Box, Discrete, MultiDiscrete)):
        raise ValueError(f"environment {env.env_id!r} has an action space {act!r}; purejaxppo "
                         "trains on Discrete, MultiDiscrete and 1-D Box actions")

"""The Brax adapter: ``brax:NAME`` (``brax:ant``), or ``brax:NAME@BACKEND`` for another physics
backend (``brax:ant@generalized``).

Brax environments (``brax.envs``) have no time limit and no auto-reset of their own: those are
wrappers (``EpisodeWrapper``, ``AutoResetWrapper``) that the adapter leaves out. Its
``max_episode_steps`` (1000, Brax's ``episode_length`` default) is enforced by
:class:`purejaxppo.envs.core.Env`, which also resets, so ``final_obs`` is the real last
observation (Brax's ``AutoResetWrapper`` writes the reset observation over it). ``terminated``:
Brax's ``done`` (e.g. the ant is unhealthy). Actions: ``Box[-1, 1]^action_size``.

The default backend is ``positional``, the one Brax's PPO training examples use for the
locomotion tasks; ``spring`` is faster, ``generalized`` and ``mjx`` more accurate. An
environment that does not run on ``positional`` (``swimmer``: ``generalized`` only) gets its own
default backend instead; a backend given by name that it does not run on is refused, naming the
one it takes.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax
import jax.numpy as jnp

from purejaxppo.envs import spaces, suites

Array = jax.Array

DEFAULT_BACKEND = "positional"
BACKENDS = ("positional", "spring", "generalized", "mjx")
EPISODE_LENGTH = 1000
"""Brax's ``episode_length`` default (``brax.envs.create``, Brax PPO's published settings)."""
NOTICE = "Brax System, piplines and environments are not actively being maintained"
"""The start of Brax's notice about itself (a ``UserWarning`` when ``brax.envs`` is first
imported), left out by :func:`purejaxppo.envs.suites.physics_loading`."""


def _brax_envs() -> Any:
    """``brax.envs``, imported in :func:`~purejaxppo.envs.suites.physics_loading`."""
    with suites.physics_loading(NOTICE):
        from brax import envs as brax_envs
    return brax_envs


def registered_ids() -> list[str]:
    """Brax's environment names."""
    return sorted(_brax_envs()._envs)


def _fluid_is_broken() -> bool:
    """Whether ``brax.fluid`` (the swimmer's fluid forces) calls ``jnp.clip`` with the
    ``a_min`` keyword that newer jax versions removed (it then fails when traced)."""
    import brax.fluid

    return ("a_min" not in inspect.signature(jnp.clip).parameters
            and "a_min=" in inspect.getsource(brax.fluid))


def _own_backend(cls: type) -> str | None:
    """The backend an environment class is made with when none is given (its constructor's
    default), or None."""
    parameter = inspect.signature(cls).parameters.get("backend")
    default = None if parameter is None else parameter.default
    return default if isinstance(default, str) else None


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
        ValueError: an unknown name (with the close ones) or backend, or a backend the
            environment does not run on.
    """
    brax_envs = _brax_envs()
    base, _, backend = name.partition("@")
    explicit = bool(backend)
    backend = backend or DEFAULT_BACKEND
    known = registered_ids()
    if base not in known:
        raise suites.unknown_name("brax", base, known)
    if backend not in BACKENDS:
        raise ValueError(f"unknown Brax backend {backend!r} in {env_id or name!r}: give "
                         f"brax:{base}@BACKEND with one of {', '.join(BACKENDS)}")
    try:
        with suites.physics_loading(NOTICE):
            env = brax_envs.get_environment(base, backend=backend)
    except ValueError as e:  # Brax: "Unsupported backend: X." for one the environment lacks
        own = _own_backend(brax_envs._envs[base])
        if "backend" not in str(e) or own is None or own == backend:
            raise
        if explicit:
            raise ValueError(f"brax:{base} does not run on the {backend!r} backend (Brax: {e}); "
                             f"give brax:{base}@{own}, or brax:{base} for its default") from None
        with suites.physics_loading(NOTICE):
            env = brax_envs.get_environment(base, backend=own)
    if getattr(getattr(env, "sys", None), "enable_fluid", False) and _fluid_is_broken():
        raise ValueError(f"environment 'brax:{base}' is not supported with jax {jax.__version__}: "
                         "Brax's fluid forces (brax.fluid, which it needs) call "
                         "jnp.clip(a_min=...), which this jax no longer accepts")
    return BraxAdapter(env, spaces.Box.of((env.observation_size,)),
                       spaces.Box.of((env.action_size,), -1.0, 1.0))

"""The Jumanji adapter: ``jumanji:NAME`` (``jumanji:Snake-v1``), with Jumanji's action masks.

A Jumanji environment steps ``(state, action) -> (state, timestep)`` without auto-reset. An
episode that ends with ``discount == 0`` terminated, one that ends with ``discount > 0`` was
truncated. Several environments (Snake among them) end at their ``time_limit`` with
``discount == 0``, as if the clock were a terminal state; for every environment whose
constructor takes a ``time_limit`` the adapter therefore gives its default limit to
:class:`purejaxppo.envs.core.Env` (``max_episode_steps``), which truncates there and resets, and
makes the environment with :data:`CLOCK_FACTOR` times that limit, which its own clock never
reaches, so ``final_obs`` is the real last observation and the clock never reads as a
termination. (A finite clock, not an unbounded one: MMST sizes arrays of its state by it.)

Observations (NamedTuples of arrays) are flattened to one float32 vector, the ``action_mask``
field left out: the adapter provides it as ``action_mask(state)`` instead, and the policy gives
invalid actions probability exactly 0. Action spaces: ``DiscreteArray`` -> Discrete;
``MultiDiscreteArray`` -> MultiDiscrete (a factorised policy; a mask per factor, as the
multi-agent tasks' ``[agents, actions]``, masks each factor), or, when the environment's mask
is a joint one over all factors (``action_mask`` of shape ``num_values``, as Minesweeper's
``[rows, cols]``), Discrete over the joint actions, each unravelled to its factors for the
environment, so the joint mask is applied exactly.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.envs import spaces, suites

Array = jax.Array

NEEDS_DOWNLOAD = {"Sokoban-v0": "downloads its level data set when created"}

CLOCK_FACTOR = 2
"""An environment whose limit the protocol enforces is made with this many times its default
``time_limit``: its own clock (``step_count >= time_limit`` after the step) never ends an episode
first. Finite, because some environments size their state by it (MMST keeps each agent's
visited nodes in ``[num_agents, time_limit]``)."""


class JumanjiState(NamedTuple):
    """The environment's state and the action mask of its last observation."""

    env_state: Any
    action_mask: Array | None


def registered_ids() -> list[str]:
    """Jumanji's environment ids that need no download."""
    import jumanji

    return sorted(e for e in jumanji.registered_environments() if e not in NEEDS_DOWNLOAD)


RENDER_MAX_PIXELS = 400
"""A ``--gif`` frame's longest side at most (the viewers draw 1000 x 1000 figures)."""


@dataclasses.dataclass(frozen=True, eq=False)
class JumanjiAdapter:
    """An :class:`~purejaxppo.envs.core.Adapter` of one Jumanji environment."""

    env: Any
    observation_space: spaces.Space
    action_space: spaces.Space
    joint_nvec: tuple[int, ...] = ()
    """The factors a joint Discrete action is unravelled into; ``()`` otherwise."""
    max_episode_steps: int | None = None
    observation_parts: tuple[tuple[int, ...], ...] = ()
    """The shapes of the observation's parts, in the order the flat vector holds them
    (:func:`purejaxppo.envs.suites.flat_parts`; Snake's: its ``[12, 12, 5]`` grid, then its step
    count), so that a network can see a grid inside it (``network="cnn"``)."""

    def _mask(self, obs: Any) -> Array | None:
        mask = getattr(obs, "action_mask", None)
        return None if mask is None else jnp.reshape(jnp.asarray(mask, bool), (-1,))

    def reset(self, key: Array) -> tuple[Array, JumanjiState]:
        state, timestep = self.env.reset(key)
        obs = timestep.observation
        return suites.flat_concat(obs), JumanjiState(state, self._mask(obs))

    def transition(self, key: Array, state: JumanjiState, action: Array):
        del key  # Jumanji environments carry their own key in the state
        if self.joint_nvec:
            action = jnp.stack(jnp.unravel_index(action, self.joint_nvec)).astype(jnp.int32)
        env_state, timestep = self.env.step(state.env_state, action)
        obs = timestep.observation
        last = timestep.last()
        terminated = last & (timestep.discount == 0)
        return (suites.flat_concat(obs), JumanjiState(env_state, self._mask(obs)),
                jnp.asarray(timestep.reward, jnp.float32), terminated, last & ~terminated)

    def action_mask(self, state: JumanjiState) -> Array:
        return state.action_mask

    def render(self, states: JumanjiState) -> np.ndarray:
        """``uint8[T, H, W, 3]``: the environment's own matplotlib viewer, switched to return
        frames (its ``rgb_array`` mode), per state."""
        from jumanji.viewer import MatplotlibViewer

        viewer = getattr(getattr(self.env, "unwrapped", self.env), "_viewer", None)
        if not isinstance(viewer, MatplotlibViewer):
            raise ValueError(f"this Jumanji environment's viewer ({type(viewer).__name__}) does "
                             "not draw frames; drop --gif")
        viewer._display = viewer._display_rgb_array  # what render_mode="rgb_array" selects
        count = len(jax.tree.leaves(states.env_state)[0])
        frames = []
        for t in range(count):
            frame = np.asarray(viewer.render(jax.tree.map(lambda x, t=t: x[t], states.env_state)))
            stride = -(-max(frame.shape[:2]) // RENDER_MAX_PIXELS)  # its figures are 1000 px
            frames.append(frame[::stride, ::stride, :3].astype(np.uint8))
        viewer.close()
        return np.stack(frames)


def _spaces(env: Any, env_id: str) -> tuple[spaces.Space, tuple[int, ...], bool]:
    """``(action space, joint factors, masked)`` of a Jumanji environment."""
    from jumanji import specs

    spec = env.action_spec
    mask_spec = getattr(env.observation_spec, "action_mask", None)
    mask_shape = None if mask_spec is None else tuple(mask_spec.shape)
    if isinstance(spec, specs.DiscreteArray):
        n = int(spec.num_values)
        if mask_shape not in (None, (n,)):
            raise ValueError(f"environment {env_id!r} has an action mask of shape {mask_shape} "
                             f"for {n} actions; purejaxppo needs one entry per action")
        return spaces.Discrete(n), (), mask_shape is not None
    if isinstance(spec, specs.MultiDiscreteArray):
        nvec = tuple(int(n) for n in np.asarray(spec.num_values).reshape(-1))
        if mask_shape is None:
            return spaces.MultiDiscrete(nvec), (), False
        if mask_shape == nvec:
            return spaces.Discrete(math.prod(nvec)), nvec, True
        if mask_shape == (sum(nvec),) or (len(set(nvec)) == 1 and mask_shape == (len(nvec), nvec[0])):
            return spaces.MultiDiscrete(nvec), (), True
        raise ValueError(f"environment {env_id!r} has a MultiDiscrete action space {nvec} with "
                         f"an action mask of shape {mask_shape}; purejaxppo takes a mask per "
                         f"factor value ({sum(nvec)},) or ({len(nvec)}, n), or a joint one {nvec}")
    raise ValueError(f"environment {env_id!r} has a {type(spec).__name__} action space; "
                     "purejaxppo trains on Jumanji's DiscreteArray and MultiDiscreteArray actions")


def make(name: str, env_id: str = "") -> Any:
    """The adapter of Jumanji's ``name`` (its default settings).

    Raises:
        ValueError: an unknown name (with the close ones), one that downloads data, one with a
            reward per agent, or an action space or mask purejaxppo cannot train on (naming it).
    """
    import jumanji

    if name in NEEDS_DOWNLOAD:
        raise ValueError(f"environment 'jumanji:{name}' is not supported: it "
                         f"{NEEDS_DOWNLOAD[name]}; pick one that needs no download")
    known = registered_ids()
    if name not in known:
        raise suites.unknown_name("jumanji", name, known)
    env = jumanji.make(name)
    limit = None
    if "time_limit" in inspect.signature(type(env).__init__).parameters and getattr(
            env, "time_limit", None):
        limit = int(env.time_limit)
        env = jumanji.make(name, time_limit=CLOCK_FACTOR * limit)
    env_id = env_id or f"jumanji:{name}"
    reward_shape = tuple(getattr(env.reward_spec, "shape", ()))
    if reward_shape != ():
        raise ValueError(f"environment {env_id!r} gives a reward of shape {reward_shape} (one per "
                         "agent); purejaxppo trains on a single scalar reward")
    action_space, joint, masked = _spaces(env, env_id)
    cls = JumanjiAdapter if masked else UnmaskedJumanjiAdapter
    adapter = cls(env, spaces.Box.of((1,)), action_space, joint, limit)
    size = suites.flat_size(adapter.reset)
    raw = jax.eval_shape(lambda key: env.reset(key)[1].observation, jax.random.key(0))
    return dataclasses.replace(adapter, observation_space=spaces.Box.of((size,)),
                               observation_parts=suites.flat_parts(raw))


@dataclasses.dataclass(frozen=True, eq=False)
class UnmaskedJumanjiAdapter(JumanjiAdapter):
    """A Jumanji environment without an action mask (no ``action_mask`` method)."""

    action_mask = None  # type: ignore[assignment]

"""Acting with a trained policy: a pure ``act`` function, and in-program evaluation episodes.

    act = purejaxppo.policy(config)
    action = act(params, obs, key)                      # a sample of pi(. | obs)
    action = act(params, obs, deterministic=True)       # the most likely action / the mean

A recurrent policy (``network="gru"`` or ``"lstm"``) takes and returns its hidden state:

    carry = purejaxppo.initial_carry(config)            # at the start of every episode
    carry, action = act(params, carry, obs, key)

An environment with action masks takes the valid actions too:

    action = act(params, obs, key, action_mask=mask)    # only among the valid actions
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo import evaluation
from purejaxppo import networks as netlib
from purejaxppo import normalize as norm
from purejaxppo.config import PPOConfig
from purejaxppo.envs import Box
from purejaxppo.networks import Networks
from purejaxppo.train import Agent, make_agent

Array = jax.Array


def make_act(agent: Agent) -> Callable[..., tuple[Any, Array]]:
    """``act_flat(params, carry, flat_obs [*batch, obs_size], key, deterministic, obs_stats,
    action_mask=None) -> (carry, action)``: the policy on observations already flattened by
    :mod:`purejaxppo.envs`, restricted to the valid actions when ``action_mask`` (bool
    ``[*batch, action_size]``) is given. ``carry`` is the recurrent hidden state (``()`` for
    feed-forward networks, returned as is)."""
    config = agent.config

    def act_flat(params: dict, carry: Any, x: Array, key: Array | None, deterministic: bool,
                 obs_stats: norm.RunningStats | None, action_mask: Array | None = None
                 ) -> tuple[Any, Array]:
        if config.normalize_obs and obs_stats is None:
            raise ValueError("this policy was trained with normalize_obs: pass "
                             "obs_stats=load(run_dir).obs_stats")
        if not isinstance(deterministic, (bool, np.bool_)):
            raise ValueError(f"deterministic={deterministic!r} is invalid: must be True or False "
                             "(under jax.jit, mark it static: static_argnames='deterministic')")
        if not deterministic and key is None:
            raise ValueError("sampling an action needs a key; pass key= or deterministic=True")
        if not deterministic and not _is_key(key):
            raise ValueError(f"key must be a PRNG key such as jax.random.key(0), got "
                             f"{jnp.result_type(key)}{list(jnp.shape(key))}")
        _check_batch(agent, carry, x, obs_stats, action_mask)
        stats = obs_stats if config.normalize_obs else None
        return evaluation.act(agent.env, agent.nets, params, carry, x, key, deterministic, stats,
                              action_mask)

    return act_flat


def _is_key(key: Any) -> bool:
    """One typed PRNG key, or one legacy ``uint32[2]`` key."""
    dtype = getattr(key, "dtype", None)
    if dtype is None:
        return False
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return jnp.ndim(key) == 0
    return dtype == jnp.uint32 and jnp.shape(key) == (2,)


def _check_batch(agent: Agent, carry: Any, x: Array, obs_stats: Any, mask: Array | None) -> None:
    """ValueErrors for a hidden state, observation statistics or action mask that do not fit
    the observations ``x [*batch, obs_size]`` (shapes only, so it holds under ``jit`` too; a
    concrete mask is also checked to allow some action in every row, and some value of every
    factor of a MultiDiscrete action)."""
    batch = x.shape[:-1]
    for leaf in jax.tree.leaves(carry):
        if jnp.shape(leaf)[:-1] != batch:
            raise ValueError(f"the hidden state is for a batch of {list(jnp.shape(leaf)[:-1])} "
                             f"observations, not {list(batch)}: start it with "
                             f"initial_carry(config, {tuple(batch)})")
    if obs_stats is not None and agent.config.normalize_obs:
        shape = jnp.shape(getattr(obs_stats, "mean", None))
        if shape != (agent.env.obs_size,):
            raise ValueError(f"obs_stats are for observations of shape {list(shape)}, not "
                             f"[{agent.env.obs_size}]: pass one run's (one seed's) statistics, "
                             "load(run_dir, seed=i).obs_stats")
    if mask is None:
        return
    if isinstance(agent.env.action_space, Box):
        raise ValueError("action_mask is for discrete actions; this environment's are continuous")
    n = agent.env.action_size
    if jnp.shape(mask) != (*batch, n):
        raise ValueError(f"action_mask has shape {list(jnp.shape(mask))}; for these observations "
                         f"it must be {[*batch, n]} (one flag per action)")
    if isinstance(mask, jax.core.Tracer):
        return
    flags = np.asarray(mask, bool)
    if not flags.any(-1).all():
        raise ValueError("action_mask allows no action in some row: at least one action must "
                         "be valid")
    nvec = agent.env.action_nvec
    bounds = np.cumsum((0, *nvec))
    for i in range(len(nvec)):
        if not flags[..., bounds[i]:bounds[i + 1]].any(-1).all():
            raise ValueError(f"action_mask allows no value of the action's factor {i} (flags "
                             f"{bounds[i]} to {bounds[i + 1] - 1}) in some row: every factor of a "
                             "MultiDiscrete action needs at least one valid value")


def initial_carry(config: PPOConfig, batch_shape: tuple[int, ...] = (),
                  networks: Networks | None = None) -> Any:
    """The hidden state a recurrent policy starts every episode from, for a batch of
    ``batch_shape`` observations (``()`` for feed-forward networks). ``networks``: as for
    ``make_train``."""
    return netlib.initial_carry(make_agent(config, networks).nets, tuple(batch_shape))


def policy(config: PPOConfig, networks: Networks | None = None) -> Callable[..., Any]:
    """``act(params, obs, key=None, *, deterministic=False, obs_stats=None, action_mask=None)
    -> action``; for a
    recurrent network ``act(params, carry, obs, key=None, ...) -> (carry, action)``, starting each
    episode from :func:`initial_carry` (the carry holds the history of the episode).

    A pure function, jit- and vmap-friendly. ``obs`` is a raw observation of ``config.env`` or a
    batch of them (leading axes); the action has the same leading axes. Sampled actions need a
    ``key``; ``deterministic=True`` returns the most likely action (Discrete) or the mean (Box).
    Box actions are clipped to the action space. A config with ``normalize_obs`` needs the
    training run's ``obs_stats`` (``load(...).obs_stats``). ``networks``: as for ``make_train``.
    For an environment with action masks, pass the observation's ``action_mask`` (bool,
    ``[*batch, action_size]``; what ``env.action_mask(state)`` gives): invalid actions are then
    never chosen. Without it every action is allowed.

    Raises:
        ValueError: (from ``act``) an observation whose trailing shape is not the environment's;
            a ``normalize_obs`` config without ``obs_stats``; a sampled action without ``key``.
    """
    agent = make_agent(config, networks)
    act_flat = make_act(agent)
    env = agent.env
    obs_shape = env.obs_shape

    def flat_obs(obs: Array) -> Array:
        obs = jnp.asarray(obs)
        if obs.shape[obs.ndim - len(obs_shape):] != obs_shape or obs.ndim < len(obs_shape):
            raise ValueError(f"observation of shape {obs.shape} does not end in {env.env_id}'s "
                             f"observation shape {obs_shape}; give one observation or a batch "
                             "of them")
        batch = obs.shape[:obs.ndim - len(obs_shape)]
        return jax.vmap(env.flatten)(obs.reshape(-1, *obs_shape)).reshape(*batch, env.obs_size)

    def act(params: dict, obs: Array, key: Array | None = None, *, deterministic: bool = False,
            obs_stats: norm.RunningStats | None = None, action_mask: Array | None = None
            ) -> Array:
        return act_flat(params, (), flat_obs(obs), key, deterministic, obs_stats, action_mask)[1]

    def act_recurrent(params: dict, carry: Any, obs: Array, key: Array | None = None, *,
                      deterministic: bool = False, obs_stats: norm.RunningStats | None = None,
                      action_mask: Array | None = None) -> tuple[Any, Array]:
        return act_flat(params, carry, flat_obs(obs), key, deterministic, obs_stats, action_mask)

    return act_recurrent if netlib.is_recurrent(agent.nets) else act


def make_evaluate(config: PPOConfig, episodes: int, deterministic: bool,
                  max_steps: int | None = None, networks: Networks | None = None
                  ) -> Callable[..., tuple[Array, Array, Array]]:
    """``evaluate(params, obs_stats, key) -> (returns, lengths, finished)``, each ``[episodes]``
    (:func:`purejaxppo.evaluation.run_episodes`; ``max_steps`` defaults to the time limit; a
    recurrent policy carries its hidden state across each episode)."""
    agent = make_agent(config, networks)

    def evaluate(params: dict, obs_stats: Any, key: Array):
        stats = obs_stats if config.normalize_obs else None
        return evaluation.run_episodes(agent.env, agent.nets, params, stats, key, episodes,
                                       deterministic, max_steps)

    return evaluate

"""Acting with a trained policy: a pure ``act`` function, and in-program evaluation episodes.

    act = purejaxppo.policy(config)
    action = act(params, obs, key)                      # a sample of pi(. | obs)
    action = act(params, obs, deterministic=True)       # the most likely action / the mean
    action = act(params, obs, key, action_mask=mask)    # only among the valid actions
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from purejaxppo import networks as netlib
from purejaxppo import normalize as norm
from purejaxppo import rollout as rollout_lib
from purejaxppo.config import PPOConfig
from purejaxppo.envs import Box
from purejaxppo.networks import Networks
from purejaxppo.train import Agent, make_agent

Array = jax.Array


def make_act(agent: Agent) -> Callable[..., Array]:
    """``act_flat(params, flat_obs [*batch, obs_size], key, deterministic, obs_stats,
    action_mask=None)``: the policy on observations already flattened by :mod:`purejaxppo.envs`,
    restricted to the valid actions when ``action_mask`` (bool ``[*batch, action_size]``) is given."""
    config, env = agent.config, agent.env

    def act_flat(params: dict, x: Array, key: Array | None, deterministic: bool,
                 obs_stats: norm.RunningStats | None, action_mask: Array | None = None) -> Array:
        if config.normalize_obs:
            if obs_stats is None:
                raise ValueError("this policy was trained with normalize_obs: pass "
                                 "obs_stats=load(run_dir).obs_stats")
            x = norm.normalize(obs_stats, x)
        dist = netlib.policy(agent.nets, params, x, action_mask)
        if deterministic:
            action = dist.mode()
        elif key is None:
            raise ValueError("sampling an action needs a key; pass key= or deterministic=True")
        else:
            action = dist.sample(rollout_lib.action_noise(env, key, x.shape[:-1]))
        space = env.action_space
        if isinstance(space, Box):
            action = jnp.clip(action, jnp.asarray(space.low, jnp.float32),
                              jnp.asarray(space.high, jnp.float32))
        return action

    return act_flat


def policy(config: PPOConfig, networks: Networks | None = None) -> Callable[..., Array]:
    """``act(params, obs, key=None, *, deterministic=False, obs_stats=None, action_mask=None)
    -> action``.

    A pure function, jit- and vmap-friendly. ``obs`` is a raw observation of ``config.env`` or a
    batch of them (leading axes); the action has the same leading axes. Sampled actions need a
    ``key``; ``deterministic=True`` returns the most likely action (Discrete) or the mean (Box).
    Box actions are clipped to the action space. A config with ``normalize_obs`` needs the
    training run's ``obs_stats`` (``load(...).obs_stats``). ``networks``: as for ``make_train``.
    For an environment with action masks, pass the observation's ``action_mask`` (bool,
    ``[*batch, action_size]``; what ``env.action_mask(state)`` gives): invalid actions are then
    never chosen. Without it every action is allowed.

    Raises:
        ValueError: (from ``act``) an observation whose trailing shape is not the environment's.
    """
    agent = make_agent(config, networks)
    act_flat = make_act(agent)
    env = agent.env
    obs_shape = env.obs_shape

    def act(params: dict, obs: Array, key: Array | None = None, *, deterministic: bool = False,
            obs_stats: norm.RunningStats | None = None, action_mask: Array | None = None
            ) -> Array:
        obs = jnp.asarray(obs)
        if obs.shape[obs.ndim - len(obs_shape):] != obs_shape or obs.ndim < len(obs_shape):
            raise ValueError(f"observation of shape {obs.shape} does not end in {env.env_id}'s "
                             f"observation shape {obs_shape}; give one observation or a batch "
                             "of them")
        batch = obs.shape[:obs.ndim - len(obs_shape)]
        x = jax.vmap(env.flatten)(obs.reshape(-1, *obs_shape)).reshape(*batch, env.obs_size)
        return act_flat(params, x, key, deterministic, obs_stats, action_mask)

    return act


def episode_limit(agent: Agent) -> int:
    """The environment's time limit (10,000 steps when it declares none)."""
    env = agent.env
    limit = env.time_limit or getattr(env.adapter, "episode_limit", None)
    return int(limit) if limit else 10_000


def make_evaluate(config: PPOConfig, episodes: int, deterministic: bool,
                  max_steps: int | None = None, networks: Networks | None = None
                  ) -> Callable[..., tuple[Array, Array, Array]]:
    """``evaluate(params, obs_stats, key) -> (returns, lengths, finished)``, each ``[episodes]``.

    One environment per episode, stepped together (vmap) in a ``lax.while_loop`` that stops when
    every episode has ended or after ``max_steps`` steps (default: the env's time limit).
    """
    agent = make_agent(config, networks)
    act_flat = make_act(agent)
    env = agent.env
    limit = max_steps or episode_limit(agent)
    step_env = jax.vmap(env.step)

    def evaluate(params: dict, obs_stats: Any, key: Array):
        k_reset, key = jax.random.split(key)
        obs, env_state = rollout_lib.reset_batch(env, jax.random.split(k_reset, episodes))
        zeros = jnp.zeros((episodes,))
        done = jnp.zeros((episodes,), bool)

        def running(carry):
            t, *_, done = carry
            return (t < limit) & ~jnp.all(done)

        def step(carry):
            t, key, obs, env_state, ret, length, done = carry
            key, k_act, k_env = jax.random.split(key, 3)
            mask = jax.vmap(env.action_mask)(env_state) if env.masked else None
            action = act_flat(params, obs, k_act, deterministic, obs_stats, mask)
            obs, env_state, reward, terminated, truncated, _ = step_env(
                jax.random.split(k_env, episodes), env_state, action)
            ret = ret + jnp.where(done, 0.0, reward)
            length = length + (~done).astype(jnp.int32)
            return t + 1, key, obs, env_state, ret, length, done | terminated | truncated

        carry = (0, key, obs, env_state, zeros, jnp.zeros((episodes,), jnp.int32), done)
        *_, ret, length, done = jax.lax.while_loop(running, step, carry)
        return ret, length, done

    return evaluate

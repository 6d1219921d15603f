"""Evaluation episodes: the current policy on fresh environments, one episode each, in-program.

Used inside training (``PPOConfig.eval_every``) and by :func:`purejaxppo.acting.make_evaluate`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from purejaxppo import networks as netlib
from purejaxppo import normalize as norm
from purejaxppo.envs import Box, Env
from purejaxppo.networks import Networks
from purejaxppo.rollout import action_noise, reset_batch

Array = jax.Array

DEFAULT_EPISODE_LIMIT = 10_000
"""Step limit of an evaluation when the environment declares no time limit."""


def episode_limit(env: Env) -> int:
    """The environment's time limit (:data:`DEFAULT_EPISODE_LIMIT` when it declares none)."""
    limit = env.time_limit or getattr(env.adapter, "episode_limit", None)
    return int(limit) if limit else DEFAULT_EPISODE_LIMIT


def act(env: Env, nets: Networks, params: dict, carry: Any, obs: Array, key: Array | None,
        deterministic: bool, obs_stats: norm.RunningStats | None,
        action_mask: Array | None = None) -> tuple[Any, Array]:
    """``(carry, actions)`` for flat observations ``[*batch, obs_size]``: the most likely action
    (Discrete) or the mean (Box) when ``deterministic``, else a sample; Box actions clipped to
    the space. ``obs_stats`` normalises the observations when given; ``carry`` is a recurrent
    policy's hidden state (``()`` for feed-forward ones), advanced one step; ``action_mask``
    (bool ``[*batch, action_size]``) restricts the policy to the valid actions."""
    if obs_stats is not None:
        obs = norm.normalize(obs_stats, obs)
    carry, dist = netlib.policy_step(nets, params, carry, obs, jnp.zeros(obs.shape[:-1], bool))
    if action_mask is not None:
        dist = dist.masked(action_mask)
    action = dist.mode() if deterministic else dist.sample(action_noise(env, key, obs.shape[:-1]))
    space = env.action_space
    if isinstance(space, Box):
        action = jnp.clip(action, jnp.asarray(space.low, jnp.float32),
                          jnp.asarray(space.high, jnp.float32))
    return carry, action


def run_episodes(env: Env, nets: Networks, params: dict, obs_stats: norm.RunningStats | None,
                 key: Array, episodes: int, deterministic: bool, max_steps: int | None = None
                 ) -> tuple[Array, Array, Array]:
    """``episodes`` fresh episodes of the policy, stepped together in a ``lax.while_loop``
    until every one has ended or after ``max_steps`` steps (default: the time limit).

    Returns:
        ``(returns, lengths, finished)``, each ``[episodes]``: undiscounted returns, lengths,
        and False where an episode was still running at the limit (its return is partial).
    """
    limit = max_steps or episode_limit(env)
    step_env = jax.vmap(env.step)
    k_reset, key = jax.random.split(key)
    obs, env_state = reset_batch(env, jax.random.split(k_reset, episodes))
    zeros = jnp.zeros((episodes,), jnp.float32)

    def running(carry: tuple) -> Array:
        t, *_, done = carry
        return (t < limit) & ~jnp.all(done)

    def step(carry: tuple) -> tuple:
        t, key, hidden, obs, env_state, ret, length, done = carry
        key, k_act, k_env = jax.random.split(key, 3)
        mask = jax.vmap(env.action_mask)(env_state) if env.masked else None
        hidden, action = act(env, nets, params, hidden, obs, k_act, deterministic, obs_stats,
                             mask)
        obs, env_state, reward, terminated, truncated, _ = step_env(
            jax.random.split(k_env, episodes), env_state, action)
        ret = ret + jnp.where(done, 0.0, reward)
        length = length + (~done).astype(jnp.int32)
        return t + 1, key, hidden, obs, env_state, ret, length, done | terminated | truncated

    # One episode per environment: a recurrent policy's state starts fresh once and is carried
    # to the episode's end (steps after it are masked out of the return).
    carry = (jnp.zeros((), jnp.int32), key, netlib.initial_carry(nets, (episodes,)), obs,
             env_state, zeros, jnp.zeros((episodes,), jnp.int32), jnp.zeros((episodes,), bool))
    *_, ret, length, done = jax.lax.while_loop(running, step, carry)
    return ret, length, done


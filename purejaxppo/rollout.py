"""Rollout: ``num_steps`` steps of ``num_envs`` environments as one ``lax.scan``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purejaxppo import networks as netlib
from purejaxppo import normalize as norm
from purejaxppo.distributions import Categorical, DiagGaussian
from purejaxppo.envs import Env

Array = jax.Array

PREDRAWN_RESET_BYTES = 1 << 20
"""A rollout pre-draws its resets in one batched call when they fit in this many bytes (per
seed); beyond it (large MinAtar batches) each step resets inline, as gymnax does."""


class Transition(NamedTuple):
    """One step of every environment (a rollout stacks them: ``[num_steps, num_envs, ...]``)."""

    obs: Array
    """Observation the action was taken in, as the networks saw it (normalised if enabled)."""
    action: Array
    """Sampled action (unclipped for Box spaces: its log-prob is the sample's)."""
    log_prob: Array
    """``log pi_old(action | obs)`` under the behaviour policy."""
    value: Array
    """``V_old(obs)``."""
    reward: Array
    """Reward used for learning (scaled if reward normalisation is on)."""
    terminated: Array
    """The episode reached a terminal state: bootstrap from 0."""
    truncated: Array
    """The episode hit its time limit: bootstrap from ``V(final_obs)``."""
    final_obs: Array
    """The observation the step ended in, before any auto-reset (normalised like ``obs``)."""
    action_mask: Array | None = None
    """The valid actions in ``obs`` (``bool[action_size]``) for an environment with action masks,
    re-applied to the new policy by the update; None otherwise."""
    carry: Any = None
    """Recurrent networks: the hidden state the step started from, before its episode-start
    reset (``{"actor": ..., "critic": ...}``); None for feed-forward networks."""
    episode_start: Array | None = None
    """Recurrent networks: ``obs`` is the first of an episode (the networks reset ``carry``)."""
    final_value: Array | None = None
    """Recurrent networks: ``V(final_obs)`` from the critic's hidden state after this step,
    before any reset: what a truncated episode bootstraps from."""


class RecurrentCarry(NamedTuple):
    """What a recurrent network carries from one step to the next, per environment."""

    hidden: Any
    """Both networks' hidden states after the last step (``{"actor": ..., "critic": ...}``)."""
    episode_start: Array
    """The current observation starts an episode: the networks reset ``hidden`` before it."""


class Normalizer(NamedTuple):
    """Running statistics of observations and of the discounted return (for reward scaling)."""

    obs: norm.RunningStats
    ret: norm.RunningStats
    discounted_return: Array


class EpisodeTracker(NamedTuple):
    """Undiscounted return and length of each environment's current episode (raw rewards)."""

    ret: Array
    length: Array


class EnvCarry(NamedTuple):
    """Everything the rollout advances: env states, last observation, episode and norm stats."""

    env_state: Any
    obs: Array
    episode: EpisodeTracker
    normalizer: Normalizer
    recurrent: RecurrentCarry | None = None
    """Recurrent networks' hidden state; None for feed-forward networks."""


class EpisodeSums(NamedTuple):
    """Returns and lengths of the episodes that finished during one rollout, summed."""

    ret: Array
    length: Array
    count: Array


def reset_batch(env: Env, keys: Array) -> tuple[Array, Any]:
    """``env.reset`` of a batch of keys of any shape: flat observations and states."""
    fn = env.reset
    for _ in range(keys.ndim):
        fn = jax.vmap(fn)
    return fn(keys)


def init_env_carry(env: Env, key: Array, num_envs: int, nets: netlib.Networks | None = None
                   ) -> EnvCarry:
    """Resets ``num_envs`` environments (and, for recurrent ``nets``, their hidden states)."""
    obs, env_state = reset_batch(env, jax.random.split(key, num_envs))
    zeros = jnp.zeros((num_envs,), jnp.float32)
    normalizer = Normalizer(obs=norm.init_stats((env.obs_size,)), ret=norm.init_stats(),
                            discounted_return=zeros)
    return EnvCarry(env_state=env_state, obs=obs,
                    episode=EpisodeTracker(ret=zeros, length=jnp.zeros((num_envs,), jnp.int32)),
                    normalizer=normalizer, recurrent=init_recurrent(nets, num_envs))


def init_recurrent(nets: netlib.Networks | None, num_envs: int) -> RecurrentCarry | None:
    """The initial hidden states of recurrent ``nets``, every episode starting; else None."""
    if nets is None or not netlib.is_recurrent(nets):
        return None
    return RecurrentCarry(hidden=netlib.initial_carry(nets, (num_envs,)),
                          episode_start=jnp.ones((num_envs,), bool))


def action_noise(env: Env, key: Array, shape: tuple[int, ...]) -> Array:
    """The sampling noise of ``shape`` actions of ``env``'s policy: Gumbel (categorical policies)
    or standard normal (Gaussian), ``[*shape, env.action_size]``."""
    dist_cls = Categorical if env.discrete else DiagGaussian
    return dist_cls.noise(key, shape, env.action_size)


def observe(normalizer: Normalizer, obs: Array, normalize_obs: bool) -> Array:
    """The observation as the networks see it."""
    return norm.normalize(normalizer.obs, obs) if normalize_obs else obs


def collect(env: Env, nets: netlib.Networks, params: dict, carry: EnvCarry, key: Array,
            num_steps: int, gamma: Array, normalize_obs: bool, normalize_reward: bool
            ) -> tuple[EnvCarry, Transition, EpisodeSums]:
    """Runs ``num_steps`` steps of every environment under the current policy.

    Recurrent networks step their hidden state with the observations; it is reset before the
    first step of every episode (after termination and after truncation alike) and stored per
    step, with the critic's ``V(final_obs)`` from the hidden state before that reset.

    All randomness (action noise, env step keys and, when they fit in
    :data:`PREDRAWN_RESET_BYTES`, the reset states of episodes that end) is drawn before the scan
    in batched calls.

    Returns:
        ``(carry, transitions [num_steps, num_envs, ...], sums of finished episodes)``.
    """
    num_envs = carry.obs.shape[0]
    k_noise, k_env, k_reset = jax.random.split(key, 3)
    noise = action_noise(env, k_noise, (num_steps, num_envs))
    env_keys = jax.random.split(k_env, (num_steps, num_envs))
    resets = None
    if num_steps * num_envs * env.state_nbytes() <= PREDRAWN_RESET_BYTES:
        resets = reset_batch(env, jax.random.split(k_reset, (num_steps, num_envs)))
    env_step = jax.vmap(env.step, in_axes=(0, 0, 0, None if resets is None else 0))

    def step(state: tuple[EnvCarry, EpisodeSums], xs: tuple[Array, Array, Any]):
        c, sums = state
        step_noise, step_keys, step_resets = xs
        normalizer = c.normalizer
        if normalize_obs:
            normalizer = normalizer._replace(obs=norm.update_stats(normalizer.obs, c.obs))
        obs = observe(normalizer, c.obs, normalize_obs)
        mask = jax.vmap(env.action_mask)(c.env_state) if env.masked else None
        rec = c.recurrent
        if rec is None:
            dist, value = netlib.policy_and_value(nets, params, obs, mask)
        else:
            hidden, dist, value = netlib.policy_and_value_step(nets, params, rec.hidden, obs,
                                                               rec.episode_start)
            dist = dist if mask is None else dist.masked(mask)
        action = dist.sample(step_noise)
        log_prob = dist.log_prob(action)
        next_obs, env_state, reward, terminated, truncated, final_obs = env_step(
            step_keys, c.env_state, action, step_resets)
        done = terminated | truncated

        ep_ret = c.episode.ret + reward
        ep_len = c.episode.length + 1
        sums = EpisodeSums(ret=sums.ret + jnp.sum(jnp.where(done, ep_ret, 0.0)),
                           length=sums.length + jnp.sum(jnp.where(done, ep_len, 0),
                                                        dtype=jnp.int32),
                           count=sums.count + jnp.sum(done, dtype=jnp.int32))
        episode = EpisodeTracker(ret=jnp.where(done, 0.0, ep_ret),
                                 length=jnp.where(done, 0, ep_len))

        learn_reward = reward
        if normalize_reward:
            disc = normalizer.discounted_return * gamma + reward
            ret_stats = norm.update_stats(normalizer.ret, disc)
            learn_reward = norm.scale(ret_stats, reward)
            normalizer = Normalizer(obs=normalizer.obs, ret=ret_stats,
                                    discounted_return=jnp.where(done, 0.0, disc))

        final_obs = observe(normalizer, final_obs, normalize_obs)
        recurrent = final_value = None
        if rec is not None:
            _, final_value = netlib.value_step(nets, params, hidden, final_obs,
                                               jnp.zeros_like(done))
            recurrent = RecurrentCarry(hidden=hidden, episode_start=done)
        transition = Transition(obs=obs, action=action, log_prob=log_prob, value=value,
                                reward=learn_reward, terminated=terminated, truncated=truncated,
                                final_obs=final_obs,
                                carry=None if rec is None else rec.hidden,
                                episode_start=None if rec is None else rec.episode_start,
                                final_value=final_value, action_mask=mask)
        carry = EnvCarry(env_state=env_state, obs=next_obs, episode=episode,
                         normalizer=normalizer, recurrent=recurrent)
        return (carry, sums), transition

    zero = jnp.zeros((), jnp.float32)
    sums0 = EpisodeSums(ret=zero, length=jnp.zeros((), jnp.int32), count=jnp.zeros((), jnp.int32))
    (carry, sums), transitions = jax.lax.scan(step, (carry, sums0), (noise, env_keys, resets))
    return carry, transitions, sums

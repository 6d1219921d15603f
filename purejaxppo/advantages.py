"""Generalised advantage estimation that keeps truncation apart from termination."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def bootstrap_values(values: Array, last_value: Array, final_values: Array,
                     terminated: Array, truncated: Array) -> Array:
    """The value ``V(s_{t+1})`` each step bootstraps from, time-major ``[T, ...]``.

    * ordinary step: ``V(obs_{t+1})`` (the next step's value, ``last_value`` after the last step);
    * truncated (time limit): ``V(final_obs_t)``, the state the episode was cut in;
      ``obs_{t+1}`` is already the next episode's first observation and must not be used;
    * terminated: ``0``, a terminal state has no future (also when truncated at the same step).
    """
    next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)
    next_values = jnp.where(truncated, final_values, next_values)
    return jnp.where(terminated, 0.0, next_values)


def gae(rewards: Array, values: Array, next_values: Array, dones: Array,
        gamma: float | Array, gae_lambda: float | Array) -> tuple[Array, Array]:
    """Generalised advantage estimation over time-major arrays ``[T, ...]``.

    ``delta_t = r_t + gamma V_next_t - V_t`` and
    ``A_t = delta_t + gamma lambda (1 - done_t) A_{t+1}``, where ``done_t`` (terminated or
    truncated) stops the recursion at the end of every episode; ``V_next_t`` comes from
    :func:`bootstrap_values`, so a truncated episode still bootstraps from its last state.

    Returns:
        ``(advantages, returns)`` with ``returns = advantages + values`` (the value targets).

    References:
        Schulman et al., 2016. High-Dimensional Continuous Control Using Generalized Advantage
        Estimation. arXiv:1506.02438.
    """
    deltas = rewards + gamma * next_values - values
    decay = gamma * gae_lambda * (1.0 - dones.astype(values.dtype))

    def backward(carry: Array, inputs: tuple[Array, Array]) -> tuple[Array, Array]:
        delta, d = inputs
        adv = delta + d * carry
        return adv, adv

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(values[0]), (deltas, decay),
                                 reverse=True)
    return advantages, advantages + values


def normalize_advantages(advantages: Array) -> Array:
    """``(A - mean(A)) / (std(A) + 1e-8)`` over every element: zero mean, unit std.

    PPO applies it per minibatch, TRPO over the whole batch (``PPOConfig.norm_adv``). A single
    advantage is returned as it is: normalised it would be 0 and its minibatch would carry no
    policy gradient (a minibatch of one transition, ``num_minibatches = num_envs * num_steps``).
    """
    if advantages.size == 1:
        return advantages
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)

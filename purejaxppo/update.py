"""Update: epochs of minibatch SGD on the PPO objective, each a ``lax.scan``.

Total loss per minibatch: ``L = L_policy + vf_coef L_value - ent_coef E[H]``; the policy term is
any loss of :data:`purejaxppo.losses.POLICY_LOSSES`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from purejaxppo import losses
from purejaxppo.config import Hyperparams, PPOConfig
from purejaxppo.networks import Actor, Critic

Array = jax.Array


class Batch(NamedTuple):
    """Flat training data: one row per transition."""

    obs: Array
    action: Array
    log_prob: Array
    value: Array
    advantages: Array
    targets: Array


class LossInfo(NamedTuple):
    """Per-minibatch diagnostics (averaged over the update by the caller)."""

    policy_loss: Array
    value_loss: Array
    entropy: Array
    approx_kl: Array
    approx_kl_k1: Array
    clip_fraction: Array


def make_optimizer(max_grad_norm: Array) -> optax.GradientTransformation:
    """``clip_by_global_norm`` then Adam's scaling (eps 1e-5); the caller multiplies by ``-lr``.

    Keeping the learning rate out of the optax chain lets it be traced (swept) and annealed
    without optax schedules; ``max_grad_norm`` may be traced too.
    """
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.scale_by_adam(eps=1e-5))


def policy_loss_kwargs(name: str, hp: Hyperparams, beta: Array) -> dict[str, Array]:
    """The hyperparameters a named policy loss takes."""
    if name in ("ppo_clip", "ppo_clip_log"):
        return {"clip_eps": hp.clip_eps}
    if name == "kl_penalty":
        return {"beta": beta}
    return {}


def policy_loss_value(name: str, log_prob: Array, old_log_prob: Array, advantages: Array,
                      hp: Hyperparams, beta: Array) -> Array:
    """``POLICY_LOSSES[name](log_prob, old_log_prob, advantages, **its hyperparameters)``."""
    fn = losses.get_policy_loss(name)
    return fn(log_prob, old_log_prob, advantages, **policy_loss_kwargs(name, hp, beta))


class PolicyLossSwitch(NamedTuple):
    """A policy loss chosen inside the program: ``names[index]``, by ``lax.switch``.

    ``names`` is static; ``index`` is an int32 scalar that may be traced, so ``jax.vmap`` over it
    trains several losses in one compiled program (batched, every branch is computed and the
    chosen one selected).
    """

    names: tuple[str, ...]
    index: Array

    def __call__(self, log_prob: Array, old_log_prob: Array, advantages: Array,
                 hp: Hyperparams, beta: Array) -> Array:
        branches = [functools.partial(policy_loss_value, name) for name in self.names]
        return jax.lax.switch(self.index, branches, log_prob, old_log_prob, advantages, hp, beta)

    def selects(self, name: str) -> Array:
        """Whether ``index`` picks the loss ``name`` (a bool array; False if it is not a choice)."""
        if name not in self.names:
            return jnp.zeros((), bool)
        return self.index == self.names.index(name)


def loss_fn(params: dict, batch: Batch, actor: Actor, critic: Critic, config: PPOConfig,
            hp: Hyperparams, beta: Array, switch: PolicyLossSwitch | None = None,
            axis_name: str | None = None) -> tuple[Array, LossInfo]:
    """The PPO objective on one minibatch: ``(total loss, diagnostics)``.

    Args:
        switch: picks the policy loss at run time; ``config.policy_loss`` when None.
        axis_name: data parallelism: the minibatch is sharded over this ``shard_map`` axis, and
            advantages are normalised with the mean and std of the whole minibatch.
    """
    dist = actor.apply(params["actor"], batch.obs)
    value = critic.apply(params["critic"], batch.obs)
    log_prob = dist.log_prob(batch.action)
    adv = batch.advantages
    if config.norm_adv and axis_name is None:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    elif config.norm_adv:
        mean = jax.lax.pmean(adv.mean(), axis_name)  # equal shards: the mean of means
        std = jnp.sqrt(jax.lax.pmean(jnp.mean(jnp.square(adv - mean)), axis_name))
        adv = (adv - mean) / (std + 1e-8)
    if switch is None:
        policy_loss = policy_loss_value(config.policy_loss, log_prob, batch.log_prob, adv, hp,
                                        beta)
    else:
        policy_loss = switch(log_prob, batch.log_prob, adv, hp, beta)
    if config.clip_value:
        v_loss = losses.clipped_value_loss(value, batch.value, batch.targets, hp.clip_eps)
    else:
        v_loss = losses.value_loss(value, batch.targets)
    entropy = jnp.mean(dist.entropy())
    total = policy_loss + hp.vf_coef * v_loss - hp.ent_coef * entropy
    k1, k3 = losses.approx_kl(log_prob, batch.log_prob)
    info = LossInfo(policy_loss, v_loss, entropy, k3, k1,
                    losses.clip_fraction(log_prob, batch.log_prob, hp.clip_eps))
    return total, info


Objective = Callable[..., tuple[Array, Any]]
"""``objective(params, minibatch, actor, critic, config, hp, beta) -> (loss, aux)``."""


def sgd_epochs(params: dict, opt_state: Any, batch: Batch, key: Array, lr: Array,
               actor: Actor, critic: Critic, config: PPOConfig, hp: Hyperparams, beta: Array,
               objective: Objective = loss_fn, axis_name: str | None = None
               ) -> tuple[dict, Any, LossInfo]:
    """:func:`sgd_steps`, with the diagnostics averaged over every minibatch step.

    Returns:
        ``(params, opt_state, diagnostics averaged over every minibatch step)``.
    """
    params, opt_state, infos = sgd_steps(params, opt_state, batch, key, lr, actor, critic,
                                         config, hp, beta, objective, axis_name)
    return params, opt_state, jax.tree.map(jnp.mean, infos)


def sgd_steps(params: dict, opt_state: Any, batch: Batch, key: Array, lr: Array,
              actor: Actor, critic: Critic, config: PPOConfig, hp: Hyperparams, beta: Array,
              objective: Objective = loss_fn, axis_name: str | None = None
              ) -> tuple[dict, Any, Any]:
    """``update_epochs`` passes over ``batch``, each in a fresh random order of minibatches.

    Args:
        objective: the minibatch loss and its diagnostics; PPO's :func:`loss_fn` by default.
        axis_name: data parallelism: ``batch`` is this device's shard, and gradients are averaged
            over the ``shard_map`` axis before the optimizer, so every device takes the same step.

    Returns:
        ``(params, opt_state, aux)``, ``aux`` stacked per step: ``[update_epochs, num_minibatches]``.
    """
    tx = make_optimizer(hp.max_grad_norm)
    n_mb, mb_size = config.num_minibatches, config.minibatch_size
    grad_fn = jax.grad(objective, has_aux=True)

    def minibatch_step(state: tuple[dict, Any], mb: Batch):
        params, opt_state = state
        grads, info = grad_fn(params, mb, actor, critic, config, hp, beta)
        if axis_name is not None:
            # Equal shards: the mean of the shards' gradients is the whole minibatch's gradient.
            grads = jax.lax.pmean(grads, axis_name)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, jax.tree.map(lambda u: -lr * u, updates))
        return (params, opt_state), info

    def epoch(state: tuple[dict, Any], epoch_key: Array):
        # One gather per epoch: permute the whole batch, then view it as minibatches.
        perm = jax.random.permutation(epoch_key, config.batch_size)
        shuffled = jax.tree.map(
            lambda x: jnp.take(x, perm, axis=0).reshape(n_mb, mb_size, *x.shape[1:]), batch)
        return jax.lax.scan(minibatch_step, state, shuffled)

    keys = jax.random.split(key, config.update_epochs)
    (params, opt_state), infos = jax.lax.scan(epoch, (params, opt_state), keys)
    return params, opt_state, infos


def adapt_kl_beta(beta: Array, kl: Array, kl_target: Array) -> Array:
    """The PPO paper's adaptive penalty: ``beta * 2`` if ``KL > 1.5 target``,
    ``beta / 2`` if ``KL < target / 1.5``, else unchanged."""
    return jnp.where(kl > 1.5 * kl_target, beta * 2.0,
                     jnp.where(kl < kl_target / 1.5, beta / 2.0, beta))

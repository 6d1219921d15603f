"""Update rules: how parameters learn from a rollout's batch, and PPO's rule.

An :class:`UpdateRule` is picked when the program is built (``PPOConfig.update_rule``): PPO's
(:func:`make_ppo_rule`, here: epochs of minibatch Adam steps, each a ``lax.scan``) or TRPO's
(:func:`purejaxppo.trpo.make_trpo_rule`). PPO's minibatch loss is
``L = L_policy + vf_coef L_value - ent_coef E[H]``; the policy term is any loss of
:data:`purejaxppo.losses.POLICY_LOSSES`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from purejaxppo import losses
from purejaxppo import networks as netlib
from purejaxppo.advantages import normalize_advantages
from purejaxppo.config import Hyperparams, PPOConfig
from purejaxppo.networks import Networks

Array = jax.Array


class Batch(NamedTuple):
    """Training data: one row per transition (feed-forward networks), or, for recurrent
    networks, time-major sequences ``[num_steps, num_envs, ...]`` with their initial hidden
    states and episode starts."""

    obs: Array
    action: Array
    log_prob: Array
    value: Array
    advantages: Array
    targets: Array
    carry: Any = None
    """Recurrent networks: the hidden state each sequence starts from ``[num_envs, ...]``."""
    episode_start: Array | None = None
    """Recurrent networks: ``[num_steps, num_envs]``, where the networks reset the hidden state."""
    action_mask: Array | None = None
    """The valid actions of each row (environments with action masks), else None."""


SEQUENCE_FIELDS = ("obs", "action", "log_prob", "value", "advantages", "targets", "episode_start",
                   "action_mask")
"""The :class:`Batch` fields with a time axis in a recurrent batch."""


def batch_policy(nets: Networks, params: dict, batch: Batch):
    """``pi(. | obs)`` of every row of ``batch``: per row (feed-forward), or by re-running the
    actor over each sequence from ``batch.carry``, resetting at ``batch.episode_start``
    (recurrent: backpropagation through the whole sequence)."""
    if not netlib.is_recurrent(nets):
        return netlib.policy(nets, params, batch.obs, batch.action_mask)
    dist = netlib.policy_sequence(nets, params, batch.carry, batch.obs, batch.episode_start)[1]
    return dist if batch.action_mask is None else dist.masked(batch.action_mask)


def batch_value(nets: Networks, params: dict, batch: Batch) -> Array:
    """``V(obs)`` of every row of ``batch``, as :func:`batch_policy`."""
    if not netlib.is_recurrent(nets):
        return netlib.value(nets, params, batch.obs)
    return netlib.value_sequence(nets, params, batch.carry, batch.obs, batch.episode_start)[1]


def batch_policy_and_value(nets: Networks, params: dict, batch: Batch):
    """``(pi, V)`` of every row of ``batch`` (:func:`batch_policy`, :func:`batch_value`)."""
    if not netlib.is_recurrent(nets):
        return netlib.policy_and_value(nets, params, batch.obs, batch.action_mask)
    return batch_policy(nets, params, batch), batch_value(nets, params, batch)


class LossInfo(NamedTuple):
    """Diagnostics of one minibatch step (averaged over the update by :func:`make_ppo_rule`)."""

    policy_loss: Array
    value_loss: Array
    entropy: Array
    approx_kl: Array
    """k3 estimate of KL[pi_old || pi_theta]: ``mean((r - 1) - log r)``."""
    approx_kl_k1: Array
    """k1 estimate: ``mean(-log r)``."""
    clip_fraction: Array


PPO_METRICS = LossInfo._fields
"""Metrics a PPO update reports (plus ``kl_beta`` when the policy loss may be ``kl_penalty``)."""

Objective = Callable[[Any, Batch], tuple[Array, Any]]
"""``objective(params, minibatch) -> (loss to minimise, aux)``: everything else bound before."""


class UpdateRule(NamedTuple):
    """How the parameters learn from one rollout's batch, picked when the program is built.

    ``init(params, hparams) -> opt_state``; ``update(params, opt_state, batch, key, hparams) ->
    (params, opt_state, metrics)``, where ``hparams.lr`` is this update's (annealed) rate and
    ``metrics`` maps each of ``metric_names`` to a scalar.
    """

    init: Callable[[dict, Hyperparams], Any]
    update: Callable[[dict, Any, Batch, Array, Hyperparams], tuple[dict, Any, dict[str, Array]]]
    metric_names: tuple[str, ...]


class PPOState(NamedTuple):
    """The PPO rule's optimiser state."""

    adam: Any
    """optax state of global-norm clipping and Adam."""
    kl_beta: Array
    """Coefficient of the KL penalty (adapted after each update when the loss is ``kl_penalty``)."""


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


def value_term(config: PPOConfig, value: Array, batch: Batch, hp: Hyperparams) -> Array:
    """PPO's value loss: clipped (range ``clip_eps``) when ``config.clip_value``."""
    if config.clip_value:
        return losses.clipped_value_loss(value, batch.value, batch.targets, hp.clip_eps)
    return losses.value_loss(value, batch.targets)


def ppo_objective(nets: Networks, config: PPOConfig, hp: Hyperparams, beta: Array,
                  switch: PolicyLossSwitch | None = None) -> Objective:
    """PPO's minibatch objective ``L = L_policy + vf_coef L_value - ent_coef E[H]``.

    The policy term is ``config.policy_loss``, or the one ``switch`` picks at run time.
    """

    def objective(params: dict, batch: Batch) -> tuple[Array, LossInfo]:
        dist, value = batch_policy_and_value(nets, params, batch)
        log_prob = dist.log_prob(batch.action)
        adv = normalize_advantages(batch.advantages) if config.norm_adv else batch.advantages
        if switch is None:
            policy_loss = policy_loss_value(config.policy_loss, log_prob, batch.log_prob, adv,
                                            hp, beta)
        else:
            policy_loss = switch(log_prob, batch.log_prob, adv, hp, beta)
        v_loss = value_term(config, value, batch, hp)
        entropy = jnp.mean(dist.entropy())
        total = policy_loss + hp.vf_coef * v_loss - hp.ent_coef * entropy
        k1, k3 = losses.approx_kl(log_prob, batch.log_prob)
        info = LossInfo(policy_loss=policy_loss, value_loss=v_loss, entropy=entropy,
                        approx_kl=k3, approx_kl_k1=k1,
                        clip_fraction=losses.clip_fraction(log_prob, batch.log_prob, hp.clip_eps))
        return total, info

    return objective


def sgd_steps(params: dict, opt_state: Any, batch: Batch, key: Array, hp: Hyperparams,
              objective: Objective, update_epochs: int, num_minibatches: int
              ) -> tuple[dict, Any, Any]:
    """``update_epochs`` passes over ``batch``, each in a fresh random order of minibatches.

    A flat batch is shuffled by transition; a recurrent one (``batch.episode_start`` set) by
    environment: each minibatch is ``num_envs / num_minibatches`` whole sequences, in time order.

    Each minibatch step: ``g = grad objective``, clipped to global norm ``hp.max_grad_norm``,
    scaled by Adam, ``params -= hp.lr * step``.

    Returns:
        ``(params, opt_state, aux)``, ``aux`` stacked per step: ``[update_epochs, num_minibatches]``.
    """
    tx = make_optimizer(hp.max_grad_norm)
    sequences = batch.episode_start is not None
    batch_size = batch.advantages.shape[1 if sequences else 0]
    mb_size = batch_size // num_minibatches
    # The steps run on one flat parameter vector (and flat Adam moments): the optimizer is then a
    # handful of kernels per step instead of four per parameter array; the same arithmetic, up
    # to the order of the sum in the global norm.
    flat_params, unravel = ravel_pytree(params)
    flat_opt_state, unravel_opt_state = _ravel_like(opt_state, params)
    grad_fn = jax.grad(lambda flat, mb: objective(unravel(flat), mb), has_aux=True)

    def minibatch_step(state: tuple[Array, Any], mb: Batch):
        flat, opt_state = state
        grads, info = grad_fn(flat, mb)
        updates, opt_state = tx.update(grads, opt_state, flat)
        return (flat - hp.lr * updates, opt_state), info

    def epoch(state: tuple[Array, Any], epoch_key: Array):
        # One gather per epoch: permute the whole batch, then view it as minibatches.
        perm = random_order(epoch_key, batch_size)
        if sequences:
            shuffled = shuffle_sequences(batch, perm, num_minibatches)
        else:
            shuffled = jax.tree.map(
                lambda x: jnp.take(x, perm, axis=0).reshape(num_minibatches, mb_size,
                                                            *x.shape[1:]),
                batch)
        return jax.lax.scan(minibatch_step, state, shuffled)

    keys = jax.random.split(key, update_epochs)
    (flat_params, flat_opt_state), infos = jax.lax.scan(epoch, (flat_params, flat_opt_state), keys)
    return unravel(flat_params), unravel_opt_state(flat_opt_state), infos


def shuffle_sequences(batch: Batch, perm: Array, num_minibatches: int) -> Batch:
    """A recurrent batch's environments in the order ``perm``, as ``num_minibatches``
    minibatches of whole sequences: ``[num_minibatches, num_steps, num_envs / num_minibatches,
    ...]`` (the carries ``[num_minibatches, num_envs / num_minibatches, ...]``)."""
    mb_envs = perm.shape[0] // num_minibatches

    def per_env(x: Array) -> Array:
        return jnp.take(x, perm, axis=0).reshape(num_minibatches, mb_envs, *x.shape[1:])

    def per_step(x: Array) -> Array:
        return jnp.swapaxes(per_env(jnp.swapaxes(x, 0, 1)), 1, 2)

    fields = {name: per_step(getattr(batch, name)) for name in SEQUENCE_FIELDS
              if getattr(batch, name) is not None}  # action_mask: None without masks
    return batch._replace(carry=jax.tree.map(per_env, batch.carry), **fields)


def adapt_kl_beta(beta: Array, kl: Array, kl_target: Array) -> Array:
    """The PPO paper's adaptive penalty: ``beta * 2`` if ``KL > 1.5 target``,
    ``beta / 2`` if ``KL < target / 1.5``, else unchanged."""
    return jnp.where(kl > 1.5 * kl_target, beta * 2.0,
                     jnp.where(kl < kl_target / 1.5, beta / 2.0, beta))


def update_kl_beta(nets: Networks, params: dict, batch: Batch, beta: Array, hp: Hyperparams
                   ) -> Array:
    """The next update's KL coefficient, from the KL of this whole update: ``mean((r - 1) -
    log r)`` of the new parameters on the rollout's samples (:func:`adapt_kl_beta`)."""
    log_ratio = batch_policy(nets, params, batch).log_prob(batch.action) - batch.log_prob
    kl = jnp.mean(jnp.expm1(log_ratio) - log_ratio)
    return adapt_kl_beta(beta, kl, hp.kl_target)


def make_ppo_rule(nets: Networks, config: PPOConfig, switch: PolicyLossSwitch | None = None
                  ) -> UpdateRule:
    """PPO's update rule: ``update_epochs`` x ``num_minibatches`` Adam steps on
    :func:`ppo_objective`, then (loss ``kl_penalty``) the adaptive KL coefficient.

    Args:
        switch: picks the policy loss at run time; ``config.policy_loss`` when None.
    """
    adapts_beta = (config.policy_loss == "kl_penalty" if switch is None
                   else "kl_penalty" in switch.names)

    def init(params: dict, hp: Hyperparams) -> PPOState:
        return PPOState(adam=make_optimizer(hp.max_grad_norm).init(params),
                        kl_beta=jnp.asarray(hp.kl_beta_init, jnp.float32))

    def update(params: dict, state: PPOState, batch: Batch, key: Array, hp: Hyperparams):
        objective = ppo_objective(nets, config, hp, state.kl_beta, switch)
        params, adam, infos = sgd_steps(params, state.adam, batch, key, hp, objective,
                                        config.update_epochs, config.num_minibatches)
        metrics = jax.tree.map(jnp.mean, infos)._asdict()
        kl_beta = state.kl_beta
        if adapts_beta:
            metrics["kl_beta"] = state.kl_beta
            kl_beta = update_kl_beta(nets, params, batch, state.kl_beta, hp)
            if switch is not None:
                kl_beta = jnp.where(switch.selects("kl_penalty"), kl_beta, state.kl_beta)
        return params, PPOState(adam=adam, kl_beta=kl_beta), metrics

    names = (*PPO_METRICS, "kl_beta") if adapts_beta else PPO_METRICS
    return UpdateRule(init=init, update=update, metric_names=names)


def random_order(key: Array, n: int) -> Array:
    """A uniformly random permutation of ``0..n-1`` (int32), by sorting one uint32 array.

    Each round draws 32 random bits per position, keeps the top ``32 - b`` of them
    (``b = bit_length(n - 1)``) and writes the position into the low ``b`` bits, so the keys are
    distinct and one sort of plain integers orders the positions by their random bits; the
    rounds' orders are composed. Positions tie (keep their order) only when their random bits
    tie in every round: with ``ceil(3 b / (32 - b))`` rounds, some pair does with probability at
    most ``n^2 2^{-3b} / 2 <= 1 / (2n)``, the standard ``jax.random.permutation`` keeps. A sort of
    one integer array is several times faster on CPU than the key-and-value sort behind
    ``jax.random.permutation`` (``benchmarks/NOTES.md``).
    """
    if n <= 1:
        return jnp.zeros((n,), jnp.int32)
    b = (n - 1).bit_length()
    free = 32 - b
    if free < 8:
        return jax.random.permutation(key, n).astype(jnp.int32)  # n > 2^24: too few free bits
    rounds = -(-3 * b // free)
    position = jnp.arange(n, dtype=jnp.uint32)
    high = jnp.uint32((0xFFFFFFFF >> b) << b)
    low = jnp.uint32((1 << b) - 1)
    order = None
    for bits in jax.random.bits(key, (rounds, n), jnp.uint32):
        round_order = (jnp.sort((bits & high) | position) & low).astype(jnp.int32)
        order = round_order if order is None else order[round_order]
    return order


def leaf_layout(tree: Any) -> list[tuple[str, tuple[int, ...]]]:
    """Each leaf of ``tree`` as ``(path, shape)``: the same for a dict and a flax ``FrozenDict``
    of the same arrays."""
    return [(jax.tree_util.keystr(path), tuple(jnp.shape(leaf)))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _ravel_like(tree: Any, params: dict) -> tuple[Any, Callable[[Any], Any]]:
    """Ravels every subtree of ``tree`` shaped like ``params`` (Adam's moments) into one vector.

    Returns:
        ``(raveled tree, inverse)``; the inverse restores the subtrees from vectors of the same
        layout (e.g. after optimizer steps on the raveled parameters).
    """
    # Matched by leaf paths and shapes, not by container type: moments made from a dict still
    # match parameters held in another mapping (a flax FrozenDict) with the same keys.
    layout = leaf_layout(params)

    def like_params(x: Any) -> bool:
        return leaf_layout(x) == layout

    subtrees, outer = jax.tree.flatten(tree, is_leaf=like_params)
    raveled = [ravel_pytree(x) if like_params(x) else (x, None) for x in subtrees]

    def inverse(flat_tree: Any) -> Any:
        parts = outer.flatten_up_to(flat_tree)
        return outer.unflatten([x if unravel is None else unravel(x)
                                for x, (_, unravel) in zip(parts, raveled, strict=True)])

    return outer.unflatten([x for x, _ in raveled]), inverse

"""Gradient agreement: do the policy losses give the same gradient, and for how long?

At ``theta = theta_old`` every surrogate of :mod:`purejaxppo.losses` has the vanilla policy
gradient ``E[grad log pi A]`` (``r = 1``, nothing clipped). The ratio and log forms
(``importance_ratio``/``importance_log``, ``ppo_clip``/``ppo_clip_log``) agree at *every* theta;
``policy_gradient`` stops being the surrogate's gradient as soon as theta leaves theta_old,
because it no longer re-weights the old policy's samples by ``r``.

:func:`gradient_agreement` measures this along a real PPO update: one rollout with the training
code, then the update epochs driven by one loss, and at every minibatch step the policy gradient
each listed loss would give on that minibatch and those parameters.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from purejaxppo.advantages import normalize_advantages
from purejaxppo.config import PPOConfig, check_config
from purejaxppo.losses import get_policy_loss
from purejaxppo.networks import Networks
from purejaxppo.parallel import compiler_options
from purejaxppo.train import collect_batch, init_state, make_agent
from purejaxppo.update import Batch, batch_policy, policy_loss_value, ppo_objective, sgd_steps

Array = jax.Array

DEFAULT_LOSSES = ("ppo_clip", "ppo_clip_log", "importance_ratio", "importance_log",
                  "policy_gradient")


class GradientAgreement(NamedTuple):
    """Per minibatch step of one update (``num_steps = update_epochs * num_minibatches``)."""

    losses: tuple[str, ...]
    """The compared policy losses."""
    pairs: tuple[tuple[str, str], ...]
    """Every pair ``(a, b)`` of ``losses``, in the order of the last axis below."""
    cosine: Array
    """``[num_steps, num_pairs]``: ``g_a . g_b / (|g_a| |g_b|)``."""
    norm_ratio: Array
    """``[num_steps, num_pairs]``: ``|g_a| / |g_b|``."""
    grad_norm: Array
    """``[num_steps, num_losses]``: ``|g_a|``."""
    approx_kl: Array
    """``[num_steps]``: KL[pi_old || pi_theta] (k3 estimate) of the parameters at that step."""

    @property
    def pair_names(self) -> tuple[str, ...]:
        """``"a vs b"`` for each pair."""
        return tuple(f"{a} vs {b}" for a, b in self.pairs)


def policy_gradients(actor_params: dict, mb: Batch, nets: Networks, config: PPOConfig,
                     hp, beta: Array, names: Sequence[str]) -> Array:
    """``[len(names), num_actor_params]``: the gradient of each policy loss alone, flattened.

    Advantages are normalised per minibatch exactly as
    :func:`purejaxppo.update.ppo_objective` does.
    """
    adv = normalize_advantages(mb.advantages) if config.norm_adv else mb.advantages

    def grad_of(name: str) -> Array:
        def policy_loss(p: dict) -> Array:
            log_prob = batch_policy(nets, {"actor": p}, mb).log_prob(mb.action)
            return policy_loss_value(name, log_prob, mb.log_prob, adv, hp, beta)

        return ravel_pytree(jax.grad(policy_loss)(actor_params))[0]

    return jnp.stack([grad_of(name) for name in names])


def compare(grads: Array, pairs: Sequence[tuple[int, int]]) -> tuple[Array, Array, Array]:
    """``(cosine [P], norm ratio [P], norms [L])`` of the rows of ``grads`` for index pairs."""
    norms = jnp.linalg.norm(grads, axis=-1)
    a, b = (jnp.asarray(i) for i in zip(*pairs, strict=True))
    dots = jnp.sum(grads[a] * grads[b], axis=-1)
    tiny = jnp.finfo(grads.dtype).tiny
    cosine = dots / jnp.maximum(norms[a] * norms[b], tiny)
    return cosine, norms[a] / jnp.maximum(norms[b], tiny), norms


@functools.lru_cache(maxsize=8)
def _compiled(config: PPOConfig, names: tuple[str, ...], driver: str) -> Callable:
    config = config.replace(policy_loss=driver, update_rule="ppo")
    agent = make_agent(config)
    index_pairs = tuple(itertools.combinations(range(len(names)), 2))

    def run(key: Array) -> tuple[Array, Array, Array, Array]:
        hp = config.hyperparams()
        state = init_state(agent, key, hp)
        # The first update of training, split as update_step splits its key.
        _, k_rollout, k_sgd = jax.random.split(state.key, 3)
        _, batch, _ = collect_batch(agent, state, hp, k_rollout)
        beta = state.opt_state.kl_beta
        ppo = ppo_objective(agent.nets, config, hp, beta)

        def objective(params: dict, mb: Batch):
            loss, info = ppo(params, mb)
            # Measurement only: the gradients are taken at the current parameters, held fixed.
            actor_params = jax.lax.stop_gradient(params["actor"])
            grads = policy_gradients(actor_params, mb, agent.nets, config, hp, beta, names)
            return loss, (*compare(grads, index_pairs), info.approx_kl)

        _, _, stats = sgd_steps(state.params, state.opt_state.adam, batch, k_sgd, hp, objective,
                                config.update_epochs, config.num_minibatches)
        # [update_epochs, num_minibatches, ...] -> [num_steps, ...]
        return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), stats)

    return jax.jit(run, compiler_options=compiler_options())


def gradient_agreement(config: PPOConfig, key: Array, losses: Sequence[str] = DEFAULT_LOSSES,
                       driver: str = "ppo_clip") -> GradientAgreement:
    """Agreement of the policy gradients of ``losses`` along one PPO update driven by ``driver``.

    Collects one rollout with the training code (as the first update of ``make_train(config)``
    with ``key`` would), runs ``config.update_epochs`` epochs of minibatch Adam on PPO's objective
    with ``driver`` as the policy loss, and at each minibatch step computes, on that minibatch and
    at those parameters, the gradient of each policy loss of ``losses`` alone (no value or
    entropy term) with respect to the actor's parameters.

    Args:
        config: the training settings (``policy_loss`` and ``update_rule`` are ignored).
        key: the seed, a ``jax.random.key`` as for ``make_train``.
        losses: names in :data:`purejaxppo.losses.POLICY_LOSSES`, at least two.
        driver: the policy loss that moves the parameters.

    Returns:
        A :class:`GradientAgreement`; arrays ``[update_epochs * num_minibatches, ...]``.
    """
    check_config(config)
    if isinstance(losses, str) or not isinstance(losses, Sequence):
        raise ValueError(f"losses must be a sequence of at least two policy loss names, got "
                         f"{losses!r}, e.g. ('ppo_clip', 'importance_ratio')")
    names = tuple(losses)
    for name in (*names, driver):
        get_policy_loss(name)  # raises for an unknown name
    if len(names) < 2:
        raise ValueError(f"gradient_agreement needs at least two losses, got {names}")
    cosine, norm_ratio, grad_norm, approx_kl = _compiled(config, names, driver)(key)
    return GradientAgreement(names, tuple(itertools.combinations(names, 2)), cosine, norm_ratio,
                             grad_norm, approx_kl)

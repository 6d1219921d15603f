"""TRPO: one trust-region step per rollout on the same importance-ratio surrogate PPO clips.

    maximise  L(theta) = E[r A],  r = pi_theta(a|s) / pi_old(a|s)
    subject to  KL_bar(theta) = E_s[KL[pi_old(.|s) || pi_theta(.|s)]] <= max_kl

on the rollout's batch, solved as in the TRPO paper (appendix C):

1. ``g = grad L(theta_old)``: the vanilla policy gradient, since ``r = 1`` there;
2. ``x ~= F^-1 g`` by conjugate gradient, ``F`` the Hessian of ``KL_bar`` at ``theta_old`` (the
   Fisher information), only ever used through products ``F v`` computed forward-over-reverse
   (a JVP of ``grad KL_bar``), never formed;
3. the full step ``s = sqrt(2 max_kl / x^T (F + damping I) x) x``, so that the damped quadratic
   model ``0.5 s^T (F + damping I) s`` of ``KL_bar`` equals ``max_kl`` (the damping that
   stabilises the solve also shortens the step slightly);
4. a backtracking line search over ``decay^j s``: the first candidate whose *exact* mean KL is
   within ``max_kl`` and whose surrogate improved is taken; if none is, the policy is kept.

With recurrent networks every policy evaluation re-runs the actor over the rollout's sequences
(:func:`purejaxppo.update.batch_policy`), so ``g``, the KL and its Fisher-vector products are taken
through the whole sequence. The actor parameters are handled as one flat vector
(``jax.flatten_util.ravel_pytree``). The critic is trained by the same Adam minibatch epochs as
PPO's, on the value loss alone. As in the paper there is no entropy bonus (``ent_coef`` is unused)
and ``policy_loss`` is ignored. Everything is ``lax`` control flow, so a TRPO update jits and vmaps
over seeds like a PPO one.

References:
    Schulman et al., 2015. Trust Region Policy Optimization. arXiv:1502.05477.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from purejaxppo import losses
from purejaxppo.advantages import normalize_advantages
from purejaxppo.config import Hyperparams, PPOConfig
from purejaxppo.networks import Networks
from purejaxppo.update import (
    Batch,
    Objective,
    UpdateRule,
    batch_policy,
    batch_value,
    make_optimizer,
    sgd_steps,
    value_term,
)

Array = jax.Array


class TRPOInfo(NamedTuple):
    """What one trust-region step did."""

    kl: Array
    """Exact mean KL[pi_old || pi_new] on the batch of the accepted step; 0 if rejected."""
    line_search_steps: Array
    """Backtracking steps before acceptance (0: the full step); ``line_search_steps``: every
    candidate rejected, the policy kept."""
    improvement: Array
    """Surrogate improvement ``L(theta_new) - L(theta_old)`` of the accepted step; 0 if rejected."""


def conjugate_gradient(matvec: Callable[[Array], Array], b: Array, iters: int,
                       residual_tol: float = 1e-10) -> Array:
    """Approximately solves ``A x = b`` for a symmetric positive-definite ``A`` given as ``matvec``.

    ``iters`` steps of conjugate gradient from ``x = 0`` (a ``lax.fori_loop``); once the squared
    residual falls below ``residual_tol`` the iterate stops moving (no division by ~0).

    Returns:
        ``x`` with the shape of ``b``.
    """

    def body(_: int, carry: tuple[Array, Array, Array, Array]):
        x, r, p, rr = carry
        active = rr > residual_tol
        ap = matvec(p)
        p_ap = jnp.vdot(p, ap)
        alpha = jnp.where(active, rr / jnp.where(active, p_ap, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = jnp.vdot(r, r)
        beta = jnp.where(active, rr_new / jnp.where(active, rr, 1.0), 0.0)
        return x, r, r + beta * p, jnp.where(active, rr_new, rr)

    init = (jnp.zeros_like(b), b, b, jnp.vdot(b, b))
    return jax.lax.fori_loop(0, iters, body, init)[0]


def fisher_vector_product(kl_fn: Callable[[Array], Array], theta: Array, damping: float | Array
                          ) -> Callable[[Array], Array]:
    """``v -> (F + damping I) v``, ``F = hessian(kl_fn)(theta)``, by forward-over-reverse.

    ``F v`` is the directional derivative of ``grad kl_fn`` along ``v``: a JVP of the gradient.
    ``jax.linearize`` runs the primal part (one forward and backward pass) once; each product then
    costs only the tangent pass.
    """
    _, hvp = jax.linearize(jax.grad(kl_fn), theta)
    return lambda v: hvp(v) + damping * v


def trust_region_step(surrogate_loss: Callable[[Array], Array], kl_fn: Callable[[Array], Array],
                      theta: Array, max_kl: float | Array, cg_iters: int,
                      cg_damping: float | Array, line_search_steps: int,
                      line_search_decay: float) -> tuple[Array, TRPOInfo]:
    """One TRPO step on a flat parameter vector.

    Args:
        surrogate_loss: ``theta -> -L(theta)``, the surrogate to *minimise*.
        kl_fn: ``theta -> KL_bar(theta)``, the mean KL from the fixed old policy (0 at ``theta``).
        theta: the old parameters, flat.
        max_kl: the trust region ``delta``; may be traced.
        cg_iters, cg_damping: conjugate-gradient iterations and Fisher damping.
        line_search_steps, line_search_decay: candidates ``decay^j s`` for ``j < steps``.

    Returns:
        ``(new theta, TRPOInfo)``; ``new theta`` is ``theta`` when the line search rejects.
    """
    loss_old, grad = jax.value_and_grad(surrogate_loss)(theta)
    g = -grad  # ascent direction of L
    fvp = fisher_vector_product(kl_fn, theta, cg_damping)
    x = conjugate_gradient(fvp, g, cg_iters)
    # Scale so that the damped quadratic model 0.5 s^T (F + damping I) s of the KL equals max_kl.
    shs = jnp.vdot(x, fvp(x))
    full_step = jnp.sqrt(2.0 * max_kl / jnp.maximum(shs, 1e-12)) * x

    def candidate(j: Array) -> tuple[Array, Array, Array]:
        theta_j = theta + jnp.asarray(line_search_decay, theta.dtype) ** j * full_step
        return theta_j, kl_fn(theta_j), loss_old - surrogate_loss(theta_j)

    def searching(carry: tuple[Array, Array, Array, Array, Array]) -> Array:
        j, accepted = carry[0], carry[1]
        return (~accepted) & (j < line_search_steps)

    def try_next(carry: tuple[Array, Array, Array, Array, Array]):
        j = carry[0]
        theta_j, kl, improvement = candidate(j.astype(theta.dtype))
        ok = (kl <= max_kl) & (improvement > 0) & jnp.isfinite(kl) & jnp.isfinite(improvement)
        return j + 1, ok, theta_j, kl, improvement

    zero = jnp.zeros((), theta.dtype)
    init = (jnp.zeros((), jnp.int32), jnp.array(False), theta, zero, zero)
    tried, accepted, theta_new, kl, improvement = jax.lax.while_loop(searching, try_next, init)
    info = TRPOInfo(jnp.where(accepted, kl, 0.0),
                    jnp.where(accepted, tried - 1, line_search_steps).astype(jnp.int32),
                    jnp.where(accepted, improvement, 0.0))
    return jnp.where(accepted, theta_new, theta), info


def policy_step(nets: Networks, actor_params: Any, batch: Batch, config: PPOConfig,
                hp: Hyperparams) -> tuple[Any, TRPOInfo]:
    """The TRPO step of the actor on the whole batch, on the ``importance_ratio`` surrogate."""
    theta, unravel = ravel_pytree(actor_params)

    def dist_of(flat: Array):
        return batch_policy(nets, {"actor": unravel(flat)}, batch)

    old_dist = jax.lax.stop_gradient(dist_of(theta))
    advantages = normalize_advantages(batch.advantages) if config.norm_adv else batch.advantages

    def surrogate_loss(flat: Array) -> Array:
        log_prob = dist_of(flat).log_prob(batch.action)
        return losses.importance_ratio_loss(log_prob, batch.log_prob, advantages)

    def kl_fn(flat: Array) -> Array:
        return jnp.mean(old_dist.kl(dist_of(flat)))

    theta, info = trust_region_step(surrogate_loss, kl_fn, theta, hp.max_kl, config.cg_iters,
                                    config.cg_damping, config.line_search_steps,
                                    config.line_search_decay)
    return unravel(theta), info


def critic_objective(nets: Networks, config: PPOConfig, hp: Hyperparams) -> Objective:
    """PPO's value term alone, ``vf_coef L_value``, as an :data:`purejaxppo.update.Objective`.

    The actor gets a zero gradient, so Adam leaves it exactly unchanged.
    """

    def objective(params: dict, batch: Batch) -> tuple[Array, Array]:
        v_loss = value_term(config, batch_value(nets, params, batch), batch, hp)
        return hp.vf_coef * v_loss, v_loss

    return objective


TRPO_METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "approx_kl_k1",
                "trpo_kl", "trpo_line_search_steps", "trpo_improvement")
"""Metrics a TRPO update reports: the surrogate, entropy and KL estimates of the policy after
the step, the value loss averaged over the critic's minibatch steps, and what the trust-region
step did."""


def make_trpo_rule(nets: Networks, config: PPOConfig) -> UpdateRule:
    """TRPO's update rule: the critic's Adam epochs, then the actor's trust-region step.

    Both use the rollout's batch only, so their order does not matter.
    """

    def init(params: dict, hp: Hyperparams) -> Any:
        return make_optimizer(hp.max_grad_norm).init(params)

    def update(params: dict, opt_state: Any, batch: Batch, key: Array, hp: Hyperparams):
        params, opt_state, v_losses = sgd_steps(params, opt_state, batch, key, hp,
                                                critic_objective(nets, config, hp),
                                                config.update_epochs, config.num_minibatches)
        actor_params, info = policy_step(nets, params["actor"], batch, config, hp)
        params = {**params, "actor": actor_params}

        dist = batch_policy(nets, params, batch)
        log_prob = dist.log_prob(batch.action)
        advantages = normalize_advantages(batch.advantages) if config.norm_adv else batch.advantages
        k1, k3 = losses.approx_kl(log_prob, batch.log_prob)
        metrics = {
            "policy_loss": losses.importance_ratio_loss(log_prob, batch.log_prob, advantages),
            "value_loss": jnp.mean(v_losses),
            "entropy": jnp.mean(dist.entropy()),
            "approx_kl": k3,
            "approx_kl_k1": k1,
            "trpo_kl": info.kl,
            "trpo_line_search_steps": info.line_search_steps,
            "trpo_improvement": info.improvement,
        }
        return params, opt_state, metrics

    return UpdateRule(init=init, update=update, metric_names=TRPO_METRICS)

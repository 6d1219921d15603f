"""Pure, importable policy-gradient losses.

Every policy loss has the signature ``loss(log_prob, old_log_prob, advantages, **hyperparameters)``
and returns a scalar to *minimise*: the negated objective, averaged over every element of inputs
of any (matching) batch shape. Nothing here depends on the rest of the package, on a config object
or on global state, so each function can be dropped into any JAX code and fed to ``jax.grad``.

Notation (PPO paper): ``r = pi_theta(a|s) / pi_theta_old(a|s) = exp(log_prob - old_log_prob)``,
``A`` the advantage estimate. ``old_log_prob`` and ``advantages`` are data: they are wrapped in
``jax.lax.stop_gradient`` so that no gradient leaks into the behaviour policy or the critic even
when a caller passes values that are still connected to parameters.

The point of this module is one identity. For every theta,

    grad_theta E[r A] = E[r * grad_theta log pi_theta * A] = grad_theta E[sg(r) log pi_theta A],

where ``sg`` is ``jax.lax.stop_gradient`` (``.detach()`` in PyTorch). At ``theta = theta_old``
``r = 1`` and both equal the vanilla policy gradient ``E[grad log pi A]``; after the first update
they differ from it, because the ratio re-weights samples drawn from the old policy.

References:
    Schulman et al., 2015. Trust Region Policy Optimization. arXiv:1502.05477.
    Schulman et al., 2017. Proximal Policy Optimization Algorithms. arXiv:1707.06347.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

Array = jax.Array

LOG_RATIO_LIMIT = 20.0
"""``|log r|`` is clipped to this before exponentiating, so ``r`` stays within
``[e^-20, e^20]``: log-probabilities that differ by hundreds (e.g. -1e3 vs 0) give finite losses
and gradients instead of ``inf``/``nan``. Such samples carry no gradient through the ratio; the
log forms drop them too, so the gradient identities hold for every input."""


def _same_shape(**arrays: Array) -> None:
    """A ValueError naming the arguments unless they all have one shape (per-sample arrays that
    broadcast against each other would give a wrong mean silently)."""
    shapes = {name: tuple(jnp.shape(a)) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
        raise ValueError(f"{listed}: these must have the same shape (one entry per sample)")


def _check(log_prob: Array, old_log_prob: Array, advantages: Array) -> None:
    _same_shape(log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages)
    chex.assert_type([log_prob, old_log_prob, advantages], float)


def _log_ratio(log_prob: Array, old_log_prob: Array) -> tuple[Array, Array]:
    """Returns ``(clip(log_prob - old_log_prob, -L, L), |log_prob - old_log_prob| <= L)``."""
    raw = log_prob - jax.lax.stop_gradient(old_log_prob)
    return jnp.clip(raw, -LOG_RATIO_LIMIT, LOG_RATIO_LIMIT), jnp.abs(raw) <= LOG_RATIO_LIMIT


def importance_ratio(log_prob: Array, old_log_prob: Array) -> Array:
    """Importance ratio ``r = exp(log_prob - old_log_prob)`` (log-ratio clipped to +-20).

    The ratio is formed from log-probabilities, never as ``pi / pi_old``, which would underflow
    for unlikely actions. Its gradient is ``r * grad log_prob``.
    """
    _same_shape(log_prob=log_prob, old_log_prob=old_log_prob)
    return jnp.exp(_log_ratio(log_prob, old_log_prob)[0])


def importance_ratio_loss(log_prob: Array, old_log_prob: Array, advantages: Array) -> Array:
    """Unclipped importance-sampling surrogate of TRPO, negated: ``-L^CPI``.

    ``L^CPI(theta) = E[r A]``, with gradient ``E[r grad log pi A]``.

    Args:
        log_prob: ``log pi_theta(a|s)`` of the sampled actions, any shape.
        old_log_prob: ``log pi_theta_old(a|s)`` under the behaviour policy, same shape.
        advantages: advantage estimates ``A``, same shape.

    Returns:
        Scalar ``-mean(r A)``.
    """
    _check(log_prob, old_log_prob, advantages)
    advantages = jax.lax.stop_gradient(advantages)
    return -jnp.mean(importance_ratio(log_prob, old_log_prob) * advantages)


def importance_log_loss(log_prob: Array, old_log_prob: Array, advantages: Array) -> Array:
    """The TRPO surrogate in log-probability form: ``-E[sg(r) log pi A]``.

    Gradient: ``-E[r grad log pi A]``, identical to :func:`importance_ratio_loss` for every theta.
    The ``stop_gradient`` on ``r`` is what makes it so: without it the gradient would gain the
    term ``grad r * log pi * A`` and be wrong (see the test suite's "pitfall" test).

    Returns:
        Scalar ``-mean(sg(r) log_prob A)``.
    """
    _check(log_prob, old_log_prob, advantages)
    advantages = jax.lax.stop_gradient(advantages)
    log_ratio, finite = _log_ratio(log_prob, old_log_prob)
    # The ratio is a fixed per-sample weight, not a function of theta: stop its gradient.
    weight = jax.lax.stop_gradient(jnp.where(finite, jnp.exp(log_ratio), 0.0))
    return -jnp.mean(weight * log_prob * advantages)


def ppo_clip_loss(
    log_prob: Array, old_log_prob: Array, advantages: Array, clip_eps: float | Array = 0.2
) -> Array:
    """PPO's clipped surrogate, negated: ``-L^CLIP``.

    ``L^CLIP(theta) = E[min(r A, clip(r, 1 - eps, 1 + eps) A)]``.

    Gradient: ``E[m r grad log pi A]`` where the mask ``m`` is 0 for samples whose ratio has left
    ``[1 - eps, 1 + eps]`` in the direction that would increase the objective (``r > 1 + eps`` with
    ``A > 0``, or ``r < 1 - eps`` with ``A < 0``) and 1 otherwise.

    Args:
        log_prob: ``log pi_theta(a|s)``, any shape.
        old_log_prob: ``log pi_theta_old(a|s)``, same shape.
        advantages: ``A``, same shape.
        clip_eps: ``eps``, the clip range; may be a traced scalar.

    Returns:
        Scalar ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A))``.
    """
    _check(log_prob, old_log_prob, advantages)
    advantages = jax.lax.stop_gradient(advantages)
    ratio = importance_ratio(log_prob, old_log_prob)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return -jnp.mean(jnp.minimum(ratio * advantages, clipped * advantages))


def ppo_clip_mask(ratio: Array, advantages: Array, clip_eps: float | Array) -> Array:
    """``1`` where ``min(r A, clip(r) A)`` takes the unclipped branch (gradient flows), else ``0``."""
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return (ratio * advantages <= clipped * advantages).astype(ratio.dtype)


def ppo_clip_log_loss(
    log_prob: Array, old_log_prob: Array, advantages: Array, clip_eps: float | Array = 0.2
) -> Array:
    """PPO's clipped surrogate in log-probability form: ``-E[sg(m r) log pi A]``.

    ``m`` is the mask of :func:`ppo_clip_mask`. The gradient, ``-E[m r grad log pi A]``, equals
    :func:`ppo_clip_loss`'s for every theta, not only at theta_old. Both ``r`` and ``m`` are held
    constant with ``stop_gradient``: ``r`` because it is an importance *weight*, ``m`` because it
    is a step function (zero gradient almost everywhere) that only selects samples.

    Returns:
        Scalar ``-mean(sg(m r) log_prob A)``. Its value is not ``L^CLIP``; its gradient is.
    """
    _check(log_prob, old_log_prob, advantages)
    advantages = jax.lax.stop_gradient(advantages)
    log_ratio, finite = _log_ratio(log_prob, old_log_prob)
    ratio = jnp.exp(log_ratio)
    weight = jnp.where(finite, ratio * ppo_clip_mask(ratio, advantages, clip_eps), 0.0)
    return -jnp.mean(jax.lax.stop_gradient(weight) * log_prob * advantages)


def policy_gradient_loss(
    log_prob: Array, old_log_prob: Array, advantages: Array
) -> Array:
    """Vanilla policy gradient (REINFORCE with a baseline), negated: ``-L^PG = -E[log pi A]``.

    Gradient: ``-E[grad log pi A]``: exact only when the samples come from the current policy,
    i.e. at ``theta = theta_old``. ``old_log_prob`` is accepted, for a uniform signature, and
    unused.

    Returns:
        Scalar ``-mean(log_prob A)``.
    """
    _check(log_prob, old_log_prob, advantages)
    del old_log_prob
    return -jnp.mean(log_prob * jax.lax.stop_gradient(advantages))


def kl_penalty_loss(
    log_prob: Array, old_log_prob: Array, advantages: Array, beta: float | Array = 1.0
) -> Array:
    """KL-penalised surrogate, negated: ``-L^KLPEN``.

    ``L^KLPEN(theta) = E[r A] - beta KL[pi_old || pi_theta]``, with the KL estimated from the
    samples (drawn from ``pi_old``) by the unbiased, non-negative estimator
    ``k3 = (r - 1) - log r``. ``beta`` may be traced (the trainer adapts it between updates).

    Returns:
        Scalar ``-(mean(r A) - beta mean((r - 1) - log r))``.
    """
    _check(log_prob, old_log_prob, advantages)
    advantages = jax.lax.stop_gradient(advantages)
    log_ratio, _ = _log_ratio(log_prob, old_log_prob)
    ratio = jnp.exp(log_ratio)
    kl = (ratio - 1.0) - log_ratio
    return -(jnp.mean(ratio * advantages) - jax.lax.stop_gradient(beta) * jnp.mean(kl))


PolicyLoss = Callable[..., Array]

POLICY_LOSSES: dict[str, PolicyLoss] = {
    "ppo_clip": ppo_clip_loss,
    "ppo_clip_log": ppo_clip_log_loss,
    "importance_ratio": importance_ratio_loss,
    "importance_log": importance_log_loss,
    "policy_gradient": policy_gradient_loss,
    "kl_penalty": kl_penalty_loss,
}
"""Every policy loss by name: ``loss(log_prob, old_log_prob, advantages, **hyperparameters)``."""


def get_policy_loss(name: str) -> PolicyLoss:
    """Looks up a policy loss in :data:`POLICY_LOSSES`.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    try:
        return POLICY_LOSSES[name]
    except (KeyError, TypeError):
        valid = ", ".join(POLICY_LOSSES)
        raise ValueError(f"unknown policy loss {name!r}; valid names: {valid}") from None


# ----------------------------------------------------------------------------------------------
# Value losses, entropy and diagnostics.


def value_loss(values: Array, targets: Array) -> Array:
    """Squared-error value loss ``0.5 E[(V - V_target)^2]`` (targets are data: no gradient)."""
    _same_shape(values=values, targets=targets)
    return 0.5 * jnp.mean(jnp.square(values - jax.lax.stop_gradient(targets)))


def clipped_value_loss(
    values: Array, old_values: Array, targets: Array, clip_eps: float | Array = 0.2
) -> Array:
    """PPO's clipped value loss.

    ``0.5 E[max((V - V_t)^2, (V_old + clip(V - V_old, -eps, eps) - V_t)^2)]``: the pessimistic of
    the plain error and the error of a value kept within ``eps`` of the one seen in the rollout.
    """
    _same_shape(values=values, old_values=old_values, targets=targets)
    old_values = jax.lax.stop_gradient(old_values)
    targets = jax.lax.stop_gradient(targets)
    clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    return 0.5 * jnp.mean(jnp.maximum(jnp.square(values - targets), jnp.square(clipped - targets)))


def categorical_entropy(logits: Array) -> Array:
    """Entropy ``H = -sum_a p_a log p_a`` of a categorical over the last axis of ``logits``."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def gaussian_entropy(log_std: Array) -> Array:
    """Entropy of a diagonal Gaussian, summed over the last axis: ``sum(log_std + 0.5 log(2 pi e))``."""
    return jnp.sum(log_std + 0.5 * jnp.log(2.0 * jnp.pi * jnp.e), axis=-1)


def entropy_loss(entropy: Array) -> Array:
    """``-E[H]``: minimising it maximises the policy's entropy (the exploration bonus)."""
    return -jnp.mean(entropy)


def approx_kl(log_prob: Array, old_log_prob: Array) -> tuple[Array, Array]:
    """Sample estimates of ``KL[pi_old || pi_theta]`` from actions drawn from ``pi_old``.

    ``k1 = E[-log r]`` (unbiased, can be negative) and ``k3 = E[(r - 1) - log r]`` (unbiased and
    non-negative, lower variance). Diagnostics only: no gradient flows.

    Returns:
        ``(k1, k3)`` scalars.
    """
    _same_shape(log_prob=log_prob, old_log_prob=old_log_prob)
    log_ratio = jax.lax.stop_gradient(log_prob - old_log_prob)
    log_ratio = jnp.clip(log_ratio, -LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    return jnp.mean(-log_ratio), jnp.mean(jnp.expm1(log_ratio) - log_ratio)


def clip_fraction(log_prob: Array, old_log_prob: Array, clip_eps: float | Array = 0.2) -> Array:
    """Fraction of samples whose ratio lies outside ``[1 - eps, 1 + eps]``: ``E[|r - 1| > eps]``."""
    ratio = jax.lax.stop_gradient(importance_ratio(log_prob, old_log_prob))
    return jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(ratio.dtype))


__all__ = [
    "LOG_RATIO_LIMIT",
    "POLICY_LOSSES",
    "approx_kl",
    "categorical_entropy",
    "clip_fraction",
    "clipped_value_loss",
    "entropy_loss",
    "gaussian_entropy",
    "get_policy_loss",
    "importance_log_loss",
    "importance_ratio",
    "importance_ratio_loss",
    "kl_penalty_loss",
    "policy_gradient_loss",
    "ppo_clip_log_loss",
    "ppo_clip_loss",
    "ppo_clip_mask",
    "value_loss",
]

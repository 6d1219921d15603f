"""Action distributions: categorical (Discrete), masked categorical (Discrete with an action mask),
factorised categorical (MultiDiscrete) and diagonal Gaussian (Box).

Sampling takes pre-drawn noise instead of a key, so a whole rollout's randomness is drawn in one
batched call before the step loop (one large RNG call is far cheaper than one per step).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from purejaxppo.losses import categorical_entropy, gaussian_entropy

Array = jax.Array

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

MASKED_LOGIT = -1e30
"""The logit an invalid action gets: finite (so no ``inf - inf`` NaN anywhere, in values or
gradients), and far enough below any real logit that ``exp`` of it, after softmax's shift by the
largest logit, is exactly 0 in float32."""


class Categorical(NamedTuple):
    """``pi(a|s) = softmax(logits)_a`` over the last axis."""

    logits: Array

    @staticmethod
    def noise(key: Array, shape: tuple[int, ...], num_actions: int) -> Array:
        """Gumbel noise for ``shape`` samples."""
        return jax.random.gumbel(key, (*shape, num_actions), jnp.float32)

    def sample(self, noise: Array) -> Array:
        """Gumbel-max: ``argmax(logits + g)`` with ``g ~ Gumbel(0, 1)`` is a sample of ``pi``."""
        return jnp.argmax(self.logits + noise, axis=-1)

    def log_prob(self, action: Array) -> Array:
        """``log softmax(logits)[action]``.

        Selected with a one-hot product rather than a gather: its gradient is a multiply, where a
        gather's is a scatter-add (several times slower on CPU for these tiny batches).
        """
        log_p = jax.nn.log_softmax(self.logits, axis=-1)
        one_hot = jax.nn.one_hot(action, log_p.shape[-1], dtype=log_p.dtype)
        return jnp.sum(log_p * one_hot, axis=-1)

    def entropy(self) -> Array:
        """``-sum_a p_a log p_a``."""
        return categorical_entropy(self.logits)

    def mode(self) -> Array:
        """The most likely action."""
        return jnp.argmax(self.logits, axis=-1)

    def kl(self, other: Categorical) -> Array:
        """``KL[self || other] = sum_a p_a (log p_a - log q_a)``, analytic, over the last axis."""
        log_p = jax.nn.log_softmax(self.logits, axis=-1)
        log_q = jax.nn.log_softmax(other.logits, axis=-1)
        return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)

    def masked(self, mask: Array) -> MaskedCategorical:
        """The policy restricted to the actions where ``mask`` (bool, same shape) is True."""
        return MaskedCategorical.of(self.logits, mask)


class MaskedCategorical(NamedTuple):
    """``pi(a|s) = mask_a exp(l_a) / sum_b mask_b exp(l_b)``: a categorical over the valid actions.

    Invalid actions (``mask`` False) have probability exactly 0: they are never sampled, add
    nothing to the entropy or the KL, and the log-probabilities of valid actions are normalised
    over the valid ones only. Everything stays finite, gradients included, down to a single valid
    action (probability 1, entropy 0). At least one action must be valid. The masking of
    invalid actions as in Huang and Ontanon (2022), "A Closer Look at Invalid Action Masking in
    Policy Gradient Algorithms", arXiv:2006.14171.
    """

    logits: Array
    """The network's logits with invalid entries replaced by :data:`MASKED_LOGIT`."""
    mask: Array
    """True where the action is valid."""

    @staticmethod
    def of(logits: Array, mask: Array) -> MaskedCategorical:
        """Masks ``logits`` (``where``, so no gradient reaches an invalid action's logit)."""
        mask = jnp.broadcast_to(jnp.asarray(mask, bool), logits.shape)
        return MaskedCategorical(jnp.where(mask, logits, MASKED_LOGIT), mask)

    noise = staticmethod(Categorical.noise)

    def sample(self, noise: Array) -> Array:
        """Gumbel-max over the valid actions only (an invalid one cannot win, whatever the noise)."""
        return jnp.argmax(jnp.where(self.mask, self.logits + noise, -jnp.inf), axis=-1)

    def log_probs(self) -> Array:
        """``log pi(a|s)`` of every action: normalised over valid ones, :data:`MASKED_LOGIT`-like
        (finite, hugely negative) for invalid ones."""
        return jax.nn.log_softmax(self.logits, axis=-1)

    def log_prob(self, action: Array) -> Array:
        """``log pi(action|s)``, normalised over the valid actions."""
        log_p = self.log_probs()
        one_hot = jax.nn.one_hot(action, log_p.shape[-1], dtype=log_p.dtype)
        return jnp.sum(jnp.where(one_hot > 0, log_p, 0.0), axis=-1)

    def entropy(self) -> Array:
        """``-sum_{a valid} p_a log p_a``."""
        log_p = self.log_probs()
        return -jnp.sum(jnp.where(self.mask, jnp.exp(log_p) * log_p, 0.0), axis=-1)

    def mode(self) -> Array:
        """The most likely valid action."""
        return jnp.argmax(jnp.where(self.mask, self.logits, -jnp.inf), axis=-1)

    def kl(self, other: MaskedCategorical) -> Array:
        """``KL[self || other] = sum_{a valid} p_a (log p_a - log q_a)`` (the same mask in both)."""
        log_p, log_q = self.log_probs(), other.log_probs()
        return jnp.sum(jnp.where(self.mask, jnp.exp(log_p) * (log_p - log_q), 0.0), axis=-1)

    def masked(self, mask: Array) -> MaskedCategorical:
        """Restricted further to where ``mask`` is True as well."""
        return MaskedCategorical.of(self.logits, self.mask & mask)


class MultiCategorical(NamedTuple):
    """A factorised categorical for MultiDiscrete actions: ``pi(a|s) = prod_i pi_i(a_i|s)``.

    One (possibly masked) categorical per factor; an action is ``[..., num_factors]`` ints.
    ``log_prob``, ``entropy`` and ``kl`` are the sums of the factors' (independence makes the
    entropy and the KL of the product the sums as well). Logits, noise and masks are laid out
    flat: the factors' ``nvec`` entries one after another (``sum(nvec)`` in all).
    """

    factors: tuple[Categorical | MaskedCategorical, ...]

    @staticmethod
    def of(logits: Array, nvec: tuple[int, ...]) -> MultiCategorical:
        """Splits ``logits [..., sum(nvec)]`` into one categorical per factor."""
        return MultiCategorical(tuple(Categorical(x) for x in _split(logits, nvec)))

    @property
    def nvec(self) -> tuple[int, ...]:
        return tuple(f.logits.shape[-1] for f in self.factors)

    noise = staticmethod(Categorical.noise)

    def sample(self, noise: Array) -> Array:
        """Each factor's Gumbel-max sample, with its slice of ``noise [..., sum(nvec)]``."""
        return jnp.stack([f.sample(n) for f, n in zip(self.factors, _split(noise, self.nvec),
                                                      strict=True)], axis=-1)

    def log_prob(self, action: Array) -> Array:
        """``sum_i log pi_i(a_i|s)``."""
        return sum(f.log_prob(action[..., i]) for i, f in enumerate(self.factors))

    def entropy(self) -> Array:
        """``sum_i H(pi_i)``."""
        return sum(f.entropy() for f in self.factors)

    def mode(self) -> Array:
        """Each factor's most likely value."""
        return jnp.stack([f.mode() for f in self.factors], axis=-1)

    def kl(self, other: MultiCategorical) -> Array:
        """``sum_i KL[pi_i || q_i]``."""
        return sum(f.kl(g) for f, g in zip(self.factors, other.factors, strict=True))

    def masked(self, mask: Array) -> MultiCategorical:
        """Each factor masked by its slice of ``mask [..., sum(nvec)]``."""
        return MultiCategorical(tuple(f.masked(m) for f, m in zip(
            self.factors, _split(mask, self.nvec), strict=True)))


def _split(x: Array, sizes: tuple[int, ...]) -> list[Array]:
    """``x`` cut along its last axis into consecutive pieces of ``sizes``."""
    bounds = [sum(sizes[:i]) for i in range(1, len(sizes))]
    return jnp.split(x, bounds, axis=-1)


class DiagGaussian(NamedTuple):
    """``pi(a|s) = N(a; mean, diag(exp(log_std)^2))``, ``log_std`` independent of the state."""

    mean: Array
    log_std: Array

    @staticmethod
    def noise(key: Array, shape: tuple[int, ...], action_size: int) -> Array:
        """Standard normal noise for ``shape`` samples."""
        return jax.random.normal(key, (*shape, action_size), jnp.float32)

    def sample(self, noise: Array) -> Array:
        """``mean + exp(log_std) * noise``: unclipped; the env wrapper clips to the bounds."""
        return self.mean + jnp.exp(self.log_std) * noise

    def log_prob(self, action: Array) -> Array:
        """``sum_i -0.5 ((a_i - mu_i) / sigma_i)^2 - log sigma_i - 0.5 log 2 pi``."""
        z = (action - self.mean) * jnp.exp(-self.log_std)
        return jnp.sum(-0.5 * jnp.square(z) - self.log_std - _HALF_LOG_2PI, axis=-1)

    def entropy(self) -> Array:
        """``sum_i log sigma_i + 0.5 log(2 pi e)``."""
        return gaussian_entropy(jnp.broadcast_to(self.log_std, self.mean.shape))

    def mode(self) -> Array:
        """The mean action."""
        return self.mean

    def kl(self, other: DiagGaussian) -> Array:
        """``KL[self || other]``, analytic, summed over the action dimensions:
        ``sum_i log(s_q / s_p) + (s_p^2 + (mu_p - mu_q)^2) / (2 s_q^2) - 1/2``."""
        log_ratio = other.log_std - self.log_std
        z = (self.mean - other.mean) * jnp.exp(-other.log_std)
        per_dim = log_ratio + 0.5 * (jnp.exp(-2.0 * log_ratio) + jnp.square(z)) - 0.5
        return jnp.sum(per_dim, axis=-1)

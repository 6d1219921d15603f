"""Action distributions: categorical (Discrete) and diagonal Gaussian (Box).

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

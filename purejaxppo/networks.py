"""Actor and critic: separate MLPs (flax linen) with orthogonal initialisation."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from purejaxppo.distributions import Categorical, DiagGaussian
from purejaxppo.env import EnvSpec

Array = jax.Array

ACTIVATION_FNS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu}


class MLP(nn.Module):
    """``Dense -> act`` per hidden layer, then a linear head of ``out_size``.

    Hidden layers use orthogonal init with gain sqrt(2); the head's gain is ``head_scale``
    (0.01 for the policy, so the initial policy is near uniform; 1.0 for the value).
    """

    hidden_sizes: Sequence[int]
    out_size: int
    activation: str = "tanh"
    head_scale: float = 1.0

    @nn.compact
    def __call__(self, x: Array) -> Array:
        act = ACTIVATION_FNS[self.activation]
        for width in self.hidden_sizes:
            x = act(nn.Dense(width, kernel_init=nn.initializers.orthogonal(jnp.sqrt(2.0)),
                             bias_init=nn.initializers.zeros)(x))
        return nn.Dense(self.out_size, kernel_init=nn.initializers.orthogonal(self.head_scale),
                        bias_init=nn.initializers.zeros)(x)


class Actor(nn.Module):
    """Policy network: logits (Discrete) or Gaussian mean plus a free ``log_std`` (Box)."""

    hidden_sizes: Sequence[int]
    action_size: int
    discrete: bool
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: Array) -> Categorical | DiagGaussian:
        out = MLP(self.hidden_sizes, self.action_size, self.activation, head_scale=0.01)(obs)
        if self.discrete:
            return Categorical(out)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_size,), jnp.float32)
        return DiagGaussian(out, log_std)


class Critic(nn.Module):
    """State-value network ``V(s)``."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        return MLP(self.hidden_sizes, 1, self.activation, head_scale=1.0)(obs)[..., 0]


def make_networks(spec: EnvSpec, hidden_sizes: Sequence[int], activation: str
                  ) -> tuple[Actor, Critic]:
    """The actor and critic for an environment."""
    return (Actor(tuple(hidden_sizes), spec.action_size, spec.discrete, activation),
            Critic(tuple(hidden_sizes), activation))


def init_params(key: Array, actor: Actor, critic: Critic, obs_size: int) -> dict:
    """``{"actor": ..., "critic": ...}`` initialised from ``key``.

    Under ``jax.vmap`` the keys are initialised one after another (``sequential_vmap``): a
    vmapped orthogonal initialiser would batch its QR factorisations, and jaxlib's batched LAPACK
    kernels split their batch over XLA:CPU's intra-op thread pool and block waiting for it. Two
    such kernels running at once (independent layers, or two devices) can occupy every worker of
    a small pool and deadlock: on a 2-core host, 256 vmapped seeds on one device, or 2 seeds per
    device on 2 devices, hung forever. Initialisation is a tiny part of training.
    """
    dummy = jnp.zeros((obs_size,))

    def init_one(key: Array) -> dict:
        k_actor, k_critic = jax.random.split(key)
        return {"actor": actor.init(k_actor, dummy), "critic": critic.init(k_critic, dummy)}

    return jax.custom_batching.sequential_vmap(init_one)(key)

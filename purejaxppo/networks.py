"""Actor and critic: separate MLPs (flax linen) with orthogonal initialisation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from purejaxppo.distributions import Categorical, DiagGaussian
from purejaxppo.env import EnvSpec

Array = jax.Array

ACTIVATION_FNS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu}
HIDDEN_GAIN = math.sqrt(2.0)
"""Orthogonal-init gain of every hidden layer's kernel."""


def layer_gains(num_hidden: int, head_scale: float) -> tuple[float, ...]:
    """Orthogonal-init gain of each ``Dense`` of an MLP: ``sqrt(2)`` per hidden layer, then the head's."""
    return (HIDDEN_GAIN,) * num_hidden + (head_scale,)


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
        widths = (*self.hidden_sizes, self.out_size)
        gains = layer_gains(len(self.hidden_sizes), self.head_scale)
        for i, (width, gain) in enumerate(zip(widths, gains, strict=True)):
            x = nn.Dense(width, kernel_init=nn.initializers.orthogonal(gain),
                         bias_init=nn.initializers.zeros)(x)
            x = act(x) if i < len(self.hidden_sizes) else x
        return x


class Actor(nn.Module):
    """Policy network: logits (Discrete) or Gaussian mean plus a free ``log_std`` (Box)."""

    hidden_sizes: Sequence[int]
    action_size: int
    discrete: bool
    activation: str = "tanh"
    head_scale = 0.01
    """Gain of the last layer: a near-uniform (near zero-mean) initial policy."""

    @nn.compact
    def __call__(self, obs: Array) -> Categorical | DiagGaussian:
        out = MLP(self.hidden_sizes, self.action_size, self.activation, self.head_scale)(obs)
        if self.discrete:
            return Categorical(out)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_size,), jnp.float32)
        return DiagGaussian(out, log_std)


class Critic(nn.Module):
    """State-value network ``V(s)``."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    head_scale = 1.0
    """Gain of the last layer."""

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        return MLP(self.hidden_sizes, 1, self.activation, self.head_scale)(obs)[..., 0]


def make_networks(spec: EnvSpec, hidden_sizes: Sequence[int], activation: str
                  ) -> tuple[Actor, Critic]:
    """The actor and critic for an environment."""
    return (Actor(tuple(hidden_sizes), spec.action_size, spec.discrete, activation),
            Critic(tuple(hidden_sizes), activation))


def orthogonal(z: Array, shape: tuple[int, int], gain: float) -> Array:
    """A ``shape`` matrix with orthonormal columns (or rows, when it is wide), times ``gain``.

    ``z`` holds ``rows * cols`` iid standard normals. With ``A = Z [max(shape), min(shape)]``
    and ``A = Q R``, ``Q diag(sign(diag R))`` is Haar-distributed (the sign fix makes the QR
    unique); a wide kernel takes its transpose.
    """
    n_in, n_out = shape
    a = z.reshape(max(shape), min(shape))
    q, r = jnp.linalg.qr(a)
    q = q * jnp.sign(jnp.diagonal(r))
    return gain * (q.T if n_in < n_out else q)


def _gains(net: Actor | Critic) -> dict[str, float]:
    """``{"Dense_i": gain}`` for the MLP inside ``net``."""
    gains = layer_gains(len(net.hidden_sizes), net.head_scale)
    return {f"Dense_{i}": g for i, g in enumerate(gains)}


def init_params(key: Array, actor: Actor, critic: Critic, obs_size: int) -> dict:
    """``{"actor": ..., "critic": ...}`` initialised from ``key``.

    The same distribution as the modules' own ``init`` (orthogonal kernels with
    :func:`layer_gains`, zero biases and ``log_std``), drawn differently: every kernel takes its
    slice of **one** normal draw, ``z ~ N(0, I)`` of the kernels' total size, and one QR per
    kernel. flax's ``init`` folds a key per parameter, a threefry program per kernel; one draw
    compiles in a quarter of the time (the init was a quarter of a CartPole run's compile).

    Under ``jax.vmap`` the keys are initialised one after another (``sequential_vmap``): a
    vmapped orthogonal initialiser would batch its QR factorisations, and jaxlib's batched LAPACK
    kernels split their batch over XLA:CPU's intra-op thread pool and block waiting for it. Two
    such kernels running at once (independent layers, or two devices) can occupy every worker of
    a small pool and deadlock: on a 2-core host, 256 vmapped seeds on one device, or 2 seeds per
    device on 2 devices, hung forever. Initialisation is a tiny part of training.
    """
    dummy = jnp.zeros((obs_size,))
    nets = {"actor": actor, "critic": critic}
    shapes = jax.eval_shape(lambda k: {n: m.init(k, dummy) for n, m in nets.items()}, key)
    gains = {n: _gains(m) for n, m in nets.items()}
    kernels = [(path, leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)
               if _name(path[-1]) == "kernel"]
    dtype = jax.tree.leaves(shapes)[0].dtype  # float32, also under jax_enable_x64
    offsets = [0]
    for _, (rows, cols) in kernels:
        offsets.append(offsets[-1] + rows * cols)

    def init_one(key: Array) -> dict:
        z = jax.random.normal(key, (offsets[-1],), dtype)
        kernel_of = {}
        for (path, shape), start, stop in zip(kernels, offsets, offsets[1:], strict=False):
            gain = gains[_name(path[0])][_name(path[-2])]
            kernel_of[path] = orthogonal(z[start:stop], shape, gain)
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: kernel_of.get(path, jnp.zeros(leaf.shape, leaf.dtype)), shapes)

    return jax.custom_batching.sequential_vmap(init_one)(key)


def _name(entry: object) -> str:
    """The key of one pytree path entry (``DictKey("kernel")`` -> ``"kernel"``)."""
    return str(getattr(entry, "key", entry))

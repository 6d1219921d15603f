"""Networks: the actor and critic modules, a registry of them by name, and their initialisation.

Built in: ``"mlp"`` (separate MLPs, the default), ``"cnn"`` (a convolutional torso each, for
MinAtar-style grids) and the recurrent ``"gru"`` and ``"lstm"`` (an MLP encoder, a recurrent cell
and a head each, for partially observed tasks). Register your own with :func:`register_network`, or pass
``make_train(config, networks=Networks(actor=..., critic=...))``.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from purejaxppo.distributions import Categorical, DiagGaussian, MaskedCategorical, MultiCategorical

Array = jax.Array

ACTIVATION_FNS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu}
HIDDEN_GAIN = math.sqrt(2.0)
"""Orthogonal-init gain of every hidden layer's kernel."""


def layer_gains(num_hidden: int, head_scale: float) -> tuple[float, ...]:
    """Orthogonal-init gain of each ``Dense`` of an MLP: ``sqrt(2)`` per hidden layer, then the head's."""
    return (HIDDEN_GAIN,) * num_hidden + (head_scale,)


SMALL_WIDTH = 4
"""Widths at or below this are handled by broadcast multiply-adds in :func:`linear`'s backward."""


@jax.custom_vjp
def linear(x: Array, kernel: Array, bias: Array) -> Array:
    """``x @ kernel + bias`` over the last axis of ``x`` (any leading axes), as ``nn.Dense``.

    The forward pass is the same product as ``nn.Dense``'s. The backward pass is the usual
    ``dx = g kernel^T``, ``dkernel = x^T g``, ``dbias = sum g`` over the leading axes, arranged
    for XLA:CPU: a product that contracts the leading (batch) axis of both operands, ``x^T g``,
    runs there in a generic kernel several times slower than the fast path when one side is
    narrow (a 4-wide input layer or a 2-logit head). So where one side is narrower than the
    other, that side is transposed first (a small copy, kept from being folded back into the
    product by an optimization barrier)
    and the product runs in the fast row-major form; equal widths use the plain product, and
    a head of at most :data:`SMALL_WIDTH` outputs back-propagates to ``x`` by broadcast
    multiply-adds. The values are the same as ``jax.grad`` of the plain product up to float
    rounding (tested); ``benchmarks/NOTES.md`` has the timings.
    """
    return _linear(x, kernel, bias)


def _linear(x: Array, kernel: Array, bias: Array) -> Array:
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ()))) + bias


def _linear_fwd(x: Array, kernel: Array, bias: Array
                ) -> tuple[Array, tuple[Array, Array, Any]]:
    return _linear(x, kernel, bias), (x, kernel, jnp.zeros((), bias.dtype))


def _linear_bwd(residuals: tuple[Array, Array, Any], g: Array) -> tuple[Array, Array, Array]:
    x, kernel, bias_zero = residuals
    n_in, n_out = kernel.shape
    if n_out <= SMALL_WIDTH:
        dx = sum(g[..., j:j + 1] * kernel[:, j] for j in range(n_out))
    else:
        dx = jax.lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())))
    x2 = x.reshape(-1, n_in)
    g2 = g.reshape(-1, n_out)
    barrier = jax.lax.optimization_barrier
    if n_in < n_out:
        dkernel = barrier(x2.T) @ g2
    elif n_out < n_in:
        dkernel = barrier(barrier(g2.T) @ x2).T
    else:
        dkernel = jax.lax.dot_general(x2, g2, (((0,), (0,)), ((), ())))
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype), g2.sum(0).astype(bias_zero.dtype)


linear.defvjp(_linear_fwd, _linear_bwd)


class Dense(nn.Module):
    """``nn.Dense`` (same parameters, names, float32 parameters under x64, and forward pass)
    through :func:`linear`."""

    features: int
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        return linear(x, kernel, bias)


class Conv(Dense):
    """``nn.Conv(features, (3, 3), padding="VALID")`` (same parameters, names and values) as one
    product of the 3x3 patches with the kernel, through :func:`linear`.

    ``[N, H, W, C] -> [N, H - 2, W - 2, features]``. XLA:CPU computes a convolution's kernel
    gradient as a second convolution whose window is the whole output map, over a hundred times
    slower there than the forward convolution (``benchmarks/NOTES.md`` has the timings); as
    patches times kernel, the gradient is one ``linear`` backward.
    The fields are :class:`Dense`'s.
    """

    @nn.compact
    def __call__(self, x: Array) -> Array:
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (3, 3, channels, self.features),
                            self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        h, w = x.shape[-3] - 2, x.shape[-2] - 2
        patches = jnp.concatenate([x[..., i:i + h, j:j + w, :] for i in range(3)
                                   for j in range(3)], axis=-1)
        return linear(patches, kernel.reshape(9 * channels, self.features), bias)


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
            x = Dense(width, kernel_init=nn.initializers.orthogonal(gain),
                      bias_init=nn.initializers.zeros)(x)
            x = act(x) if i < len(self.hidden_sizes) else x
        return x


Policy = Categorical | MaskedCategorical | MultiCategorical | DiagGaussian


def categorical(logits: Array, nvec: tuple[int, ...] = ()) -> Categorical | MultiCategorical:
    """The categorical policy of ``logits``: factorised over ``nvec`` when it is given
    (MultiDiscrete actions)."""
    return MultiCategorical.of(logits, tuple(nvec)) if nvec else Categorical(logits)


class Actor(nn.Module):
    """Policy network: logits (Discrete) or Gaussian mean plus a free ``log_std`` (Box)."""

    hidden_sizes: Sequence[int]
    action_size: int
    discrete: bool
    activation: str = "tanh"
    nvec: tuple[int, ...] = ()
    """MultiDiscrete factor sizes (``action_size == sum(nvec)`` logits); ``()`` otherwise."""
    head_scale = 0.01
    """Gain of the last layer: a near-uniform (near zero-mean) initial policy."""

    @nn.compact
    def __call__(self, obs: Array) -> Policy:
        out = MLP(self.hidden_sizes, self.action_size, self.activation, self.head_scale)(obs)
        if self.discrete:
            return categorical(out, self.nvec)
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


class Networks(NamedTuple):
    """The actor and the critic of one agent, as flax modules with separate parameters.

    A **recurrent** pair also gives ``initial_carry(batch_shape) -> {"actor": ..., "critic":
    ...}``, the hidden state an episode starts from. Its modules are called on time-major
    sequences, ``apply(params, carry, obs [T, *batch, obs_size], episode_start [T, *batch])
    -> (carry after the last step, out [T, *batch, ...])``, and reset the carry to its initial
    value wherever ``episode_start`` is True, before that step (see :class:`RecurrentActor`).

    ``actor.apply(params["actor"], obs)`` returns the policy, a
    :class:`~purejaxppo.distributions.Categorical` (Discrete actions),
    :class:`~purejaxppo.distributions.MultiCategorical` (MultiDiscrete actions:
    :func:`categorical` of the ``env.action_size`` logits and ``env.action_nvec``) or
    :class:`~purejaxppo.distributions.DiagGaussian` (Box actions); an action mask is applied
    outside the actor (:func:`policy`), so actors never see one; ``critic.apply(params["critic"],
    obs)`` returns ``V(obs)`` without the last axis. ``obs`` is ``[..., obs_size]``: the flat float32
    observation of :mod:`purejaxppo.envs` (a module that wants the raw shape, like a CNN,
    reshapes it with ``env.obs_shape``). Every caller (rollout, objectives, TRPO, acting) goes
    through this module's functions: :func:`policy_and_value`, :func:`policy` and :func:`value`
    for feed-forward networks, and the ``*_step`` (one time step) and ``*_sequence`` (a rollout's
    steps) forms, which thread a recurrent network's carry.
    """

    actor: nn.Module
    critic: nn.Module
    initial_carry: Callable[[tuple[int, ...]], Any] | None = None
    """``None`` for feed-forward networks; ``batch_shape -> carry`` for recurrent ones."""


def is_recurrent(nets: Networks) -> bool:
    """True when the networks carry a hidden state (``nets.initial_carry`` is set)."""
    return nets.initial_carry is not None


NetworkFactory = Callable[[Any, Any], Networks]
"""``factory(env, config) -> Networks``: builds the networks of an environment for a config."""


def mlp_networks(env: Any, config: Any) -> Networks:
    """Separate MLPs of ``config.hidden_sizes`` with ``config.activation`` (the default)."""
    return Networks(actor=Actor(tuple(config.hidden_sizes), env.action_size, env.discrete,
                                config.activation, env.action_nvec),
                    critic=Critic(tuple(config.hidden_sizes), config.activation))


class ConvTorso(nn.Module):
    """``Conv(16, 3x3) -> act -> flatten -> MLP(hidden_sizes)`` over an ``[H, W, C]`` grid.

    The layer of the MinAtar baselines (Young and Tian, 2019, arXiv:1903.03176), followed by the
    configured hidden layers; orthogonal init with gain sqrt(2), zero biases. Where the flat
    observation holds more than the grid (``extra`` other values, the grid from ``start``: a
    Jumanji observation's step count beside its grid), the other values join the convolution's
    flattened output before the hidden layers.
    """

    obs_shape: tuple[int, ...]
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    features: int = 16
    start: int = 0
    """Where the grid starts in the flat observation."""
    extra: int = 0
    """How many values of the flat observation are not the grid's."""

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        act = ACTIVATION_FNS[self.activation]
        batch = obs.shape[:-1]
        if self.extra:
            flat = obs.reshape(-1, obs.shape[-1])
            stop = self.start + math.prod(self.obs_shape)
            x = flat[:, self.start:stop].reshape(-1, *self.obs_shape)
            rest = jnp.concatenate([flat[:, :self.start], flat[:, stop:]], axis=-1)
        else:
            x = obs.reshape(-1, *self.obs_shape)
        x = Conv(self.features, kernel_init=nn.initializers.orthogonal(HIDDEN_GAIN),
                 bias_init=nn.initializers.zeros)(x)
        x = act(x).reshape(x.shape[0], -1)
        if self.extra:
            x = jnp.concatenate([x, rest], axis=-1)
        for width in self.hidden_sizes:
            x = act(nn.Dense(width, kernel_init=nn.initializers.orthogonal(HIDDEN_GAIN),
                             bias_init=nn.initializers.zeros)(x))
        return x.reshape(*batch, x.shape[-1])


def _head(width: int, scale: float) -> nn.Dense:
    return nn.Dense(width, kernel_init=nn.initializers.orthogonal(scale),
                    bias_init=nn.initializers.zeros)


class CNNActor(nn.Module):
    """The policy on a :class:`ConvTorso`: logits, or a Gaussian mean and a free ``log_std``."""

    obs_shape: tuple[int, ...]
    hidden_sizes: Sequence[int]
    action_size: int
    discrete: bool
    activation: str = "relu"
    nvec: tuple[int, ...] = ()
    """MultiDiscrete factor sizes; ``()`` otherwise."""
    start: int = 0
    extra: int = 0
    """:class:`ConvTorso`'s."""

    @nn.compact
    def __call__(self, obs: Array) -> Policy:
        x = ConvTorso(self.obs_shape, self.hidden_sizes, self.activation, start=self.start,
                      extra=self.extra)(obs)
        out = _head(self.action_size, Actor.head_scale)(x)
        if self.discrete:
            return categorical(out, self.nvec)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_size,), jnp.float32)
        return DiagGaussian(out, log_std)


class CNNCritic(nn.Module):
    """``V(s)`` on a :class:`ConvTorso` of its own."""

    obs_shape: tuple[int, ...]
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    start: int = 0
    extra: int = 0
    """:class:`ConvTorso`'s."""

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        x = ConvTorso(self.obs_shape, self.hidden_sizes, self.activation, start=self.start,
                      extra=self.extra)(obs)
        return _head(1, Critic.head_scale)(x)[..., 0]


def cnn_networks(env: Any, config: Any) -> Networks:
    """A :class:`ConvTorso` each for actor and critic, for ``[H, W, C]`` observations (MinAtar),
    or for a flat observation with one such part among others (``env.obs_parts``: Jumanji's
    Snake, its grid and its step count).

    Raises:
        ValueError: the observations are not 3-D grids and hold no single 3-D part, their
            parts do not add up to the observation, or the grid is smaller than 3x3.
    """
    shape, start, extra = tuple(env.obs_shape), 0, 0
    if len(shape) != 3:
        parts = [tuple(p) for p in getattr(env, "obs_parts", ())]
        grids = [i for i, p in enumerate(parts) if len(p) == 3]
        if len(grids) != 1:
            raise ValueError(f"network='cnn' needs [height, width, channels] observations, or "
                             f"observations with one such part; {env.env_id} observes shape "
                             f"{env.obs_shape}"
                             + (f" (parts {parts})" if len(parts) > 1 else "")
                             + "; use network='mlp'")
        if sum(math.prod(p) for p in parts) != env.obs_size:
            raise ValueError(f"{env.env_id}'s observation_parts {parts} hold "
                             f"{sum(math.prod(p) for p in parts)} values, its observation "
                             f"{env.obs_size}: give the shapes of the flat vector's parts")
        shape = parts[grids[0]]
        start = sum(math.prod(p) for p in parts[:grids[0]])
        extra = env.obs_size - math.prod(shape)
    if shape[0] < 3 or shape[1] < 3:
        raise ValueError(f"network='cnn' needs a grid of at least 3x3 for its 3x3 convolution; "
                         f"{env.env_id}'s is {shape[0]}x{shape[1]}: use network='mlp'")
    hidden = tuple(config.hidden_sizes)
    return Networks(actor=CNNActor(shape, hidden, env.action_size, env.discrete,
                                   config.activation, env.action_nvec, start=start, extra=extra),
                    critic=CNNCritic(shape, hidden, config.activation, start=start, extra=extra))


CELLS = {"gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell}
"""The recurrent cells by network name (flax's GRU, Cho et al. 2014; LSTM, Hochreiter and
Schmidhuber 1997)."""


def zero_carry(cell: str, features: int, batch_shape: tuple[int, ...]) -> Any:
    """The initial hidden state of one cell: zeros ``[*batch, features]`` (a pair ``(c, h)`` for
    the LSTM)."""
    h = jnp.zeros((*batch_shape, features), jnp.float32)
    return h if cell == "gru" else (h, h)


class ResetCell(nn.Module):
    """One step of a recurrent cell that first resets its carry where an episode starts.

    ``(carry, (x, start)) -> (carry', y)`` with ``carry = where(start, initial, carry)`` before
    the cell: the hidden state never crosses an episode boundary.
    """

    cell: str
    features: int

    @nn.compact
    def __call__(self, carry: Any, inputs: tuple[Array, Array]) -> tuple[Any, Array]:
        x, start = inputs
        carry = jax.tree.map(lambda h: jnp.where(start[..., None], jnp.zeros_like(h), h), carry)
        return CELLS[self.cell](self.features)(carry, x)


ScannedCell = nn.scan(ResetCell, variable_broadcast="params", split_rngs={"params": False},
                      in_axes=0, out_axes=0)
""":class:`ResetCell` over the leading (time) axis, one set of parameters for every step."""


class RecurrentTorso(nn.Module):
    """``MLP(hidden_sizes)`` encoder per step, then a cell of ``hidden_sizes[-1]`` units over time.

    ``(carry, obs [T, *batch, F], episode_start [T, *batch]) -> (carry, features [T, *batch, H])``.
    """

    cell: str
    hidden_sizes: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, carry: Any, obs: Array, episode_start: Array) -> tuple[Any, Array]:
        act = ACTIVATION_FNS[self.activation]
        x = obs
        for width in self.hidden_sizes:
            x = act(_head(width, HIDDEN_GAIN)(x))
        return ScannedCell(self.cell, self.hidden_sizes[-1])(carry, (x, episode_start))


class RecurrentActor(nn.Module):
    """The policy on a :class:`RecurrentTorso`: logits, or a Gaussian mean and a free ``log_std``."""

    cell: str
    hidden_sizes: Sequence[int]
    action_size: int
    discrete: bool
    activation: str = "tanh"
    nvec: tuple[int, ...] = ()
    """MultiDiscrete factor sizes, as :attr:`Actor.nvec`."""

    @nn.compact
    def __call__(self, carry: Any, obs: Array, episode_start: Array
                 ) -> tuple[Any, Policy]:
        carry, x = RecurrentTorso(self.cell, self.hidden_sizes, self.activation)(
            carry, obs, episode_start)
        out = _head(self.action_size, Actor.head_scale)(x)
        if self.discrete:
            return carry, categorical(out, self.nvec)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_size,), jnp.float32)
        return carry, DiagGaussian(out, log_std)


class RecurrentCritic(nn.Module):
    """``V(history)`` on a :class:`RecurrentTorso` of its own."""

    cell: str
    hidden_sizes: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, carry: Any, obs: Array, episode_start: Array) -> tuple[Any, Array]:
        carry, x = RecurrentTorso(self.cell, self.hidden_sizes, self.activation)(
            carry, obs, episode_start)
        return carry, _head(1, Critic.head_scale)(x)[..., 0]


def recurrent_initial_carry(cell: str, features: int, batch_shape: tuple[int, ...]) -> dict:
    """``{"actor": zeros, "critic": zeros}``: the hidden states an episode starts from."""
    return {"actor": zero_carry(cell, features, batch_shape),
            "critic": zero_carry(cell, features, batch_shape)}


def recurrent_networks(cell: str, env: Any, config: Any) -> Networks:
    """Separate recurrent actor and critic (an encoder MLP, a ``cell``, a head each).

    Separate, not a shared torso: TRPO steps the actor alone and trains the critic by its own
    Adam epochs, which a shared torso would couple; and it is the layout of the MLP default.
    """
    hidden = tuple(config.hidden_sizes)
    return Networks(actor=RecurrentActor(cell, hidden, env.action_size, env.discrete,
                                         config.activation, env.action_nvec),
                    critic=RecurrentCritic(cell, hidden, config.activation),
                    initial_carry=functools.partial(recurrent_initial_carry, cell, hidden[-1]))


_NETWORKS: dict[str, NetworkFactory] = {"mlp": mlp_networks, "cnn": cnn_networks,
                                        "gru": functools.partial(recurrent_networks, "gru"),
                                        "lstm": functools.partial(recurrent_networks, "lstm")}


def register_network(name: str, factory: NetworkFactory) -> None:
    """Makes ``PPOConfig(network=name)`` build ``factory(env, config)`` (replaces a same name).

    Raises:
        ValueError: an empty name or a factory that is not callable.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"network name {name!r} is invalid: give a non-empty string")
    if not callable(factory):
        raise ValueError(f"the factory of network {name!r} must be callable: "
                         "factory(env, config) -> Networks")
    _NETWORKS[name] = factory


def unregister_network(name: str) -> None:
    """Forgets a registered network (no error if there is none; the built-ins can be removed
    too, so take care)."""
    _NETWORKS.pop(name, None)


def registered_networks() -> list[str]:
    """Names :func:`make_networks` accepts."""
    return list(_NETWORKS)


def make_networks(env: Any, config: Any) -> Networks:
    """The networks ``config.network`` names, built for ``env``.

    Raises:
        ValueError: an unknown name (with the known ones), or a factory that returned something
            other than :class:`Networks`.
    """
    name = config.network
    if name not in _NETWORKS:
        close = difflib.get_close_matches(name, list(_NETWORKS), n=2, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown network {name!r}.{hint} Known networks: "
                         f"{', '.join(_NETWORKS)} (register your own with "
                         "purejaxppo.networks.register_network)")
    nets = _NETWORKS[name](env, config)
    if not isinstance(nets, Networks):
        raise ValueError(f"network {name!r}'s factory returned a {type(nets).__name__}; it must "
                         "return purejaxppo.networks.Networks(actor=..., critic=...)")
    return nets


def policy(nets: Networks, params: dict, obs: Array, action_mask: Array | None = None) -> Policy:
    """The policy ``pi(. | obs)``; restricted to the valid actions when ``action_mask`` (bool,
    ``[..., action_size]``) is given (invalid ones get probability exactly 0)."""
    dist = nets.actor.apply(params["actor"], obs)
    return dist if action_mask is None else dist.masked(action_mask)


def value(nets: Networks, params: dict, obs: Array) -> Array:
    """``V(obs)``."""
    return nets.critic.apply(params["critic"], obs)


def policy_and_value(nets: Networks, params: dict, obs: Array, action_mask: Array | None = None
                     ) -> tuple[Policy, Array]:
    """``(pi(. | obs), V(obs))`` (``action_mask`` as for :func:`policy`)."""
    return policy(nets, params, obs, action_mask), value(nets, params, obs)


def initial_carry(nets: Networks, batch_shape: tuple[int, ...]) -> Any:
    """The hidden state episodes start from (``()`` for feed-forward networks)."""
    return nets.initial_carry(tuple(batch_shape)) if is_recurrent(nets) else ()


def _step(module_out: tuple[Any, Any]) -> tuple[Any, Any]:
    """Drops the time axis of length 1 from a sequence call's output (``log_std`` has none)."""
    carry, out = module_out
    if isinstance(out, DiagGaussian):
        return carry, DiagGaussian(out.mean[0], out.log_std)
    return carry, jax.tree.map(lambda x: x[0], out)


def policy_sequence(nets: Networks, params: dict, carry: Any, obs: Array, episode_start: Array
                    ) -> tuple[Any, Categorical | DiagGaussian]:
    """Recurrent networks: ``(actor carry after the last step, pi [T, *batch])`` over a
    time-major sequence ``obs [T, *batch, obs_size]`` from ``carry`` (both networks' carries),
    resetting where ``episode_start [T, *batch]``."""
    return nets.actor.apply(params["actor"], carry["actor"], obs, episode_start)


def value_sequence(nets: Networks, params: dict, carry: Any, obs: Array, episode_start: Array
                   ) -> tuple[Any, Array]:
    """Recurrent networks: ``(critic carry after the last step, V [T, *batch])``, as
    :func:`policy_sequence`."""
    return nets.critic.apply(params["critic"], carry["critic"], obs, episode_start)


def policy_step(nets: Networks, params: dict, carry: Any, obs: Array, episode_start: Array
                ) -> tuple[Any, Categorical | DiagGaussian]:
    """One step of the policy, ``obs [*batch, obs_size]``: ``(carry, pi)``; feed-forward networks
    ignore and return ``carry``. Only the actor's part of the carry moves."""
    if not is_recurrent(nets):
        return carry, policy(nets, params, obs)
    actor, dist = _step(policy_sequence(nets, params, carry, obs[None], episode_start[None]))
    return {**carry, "actor": actor}, dist


def value_step(nets: Networks, params: dict, carry: Any, obs: Array, episode_start: Array
               ) -> tuple[Any, Array]:
    """One step of the critic, as :func:`policy_step`; only the critic's part of the carry moves."""
    if not is_recurrent(nets):
        return carry, value(nets, params, obs)
    critic, v = _step(value_sequence(nets, params, carry, obs[None], episode_start[None]))
    return {**carry, "critic": critic}, v


def policy_and_value_step(nets: Networks, params: dict, carry: Any, obs: Array,
                          episode_start: Array
                          ) -> tuple[Any, Categorical | DiagGaussian, Array]:
    """``(carry, pi, V)`` of one step: :func:`policy_step` and :func:`value_step` together."""
    if not is_recurrent(nets):
        dist, v = policy_and_value(nets, params, obs)
        return carry, dist, v
    carry, dist = policy_step(nets, params, carry, obs, episode_start)
    carry, v = value_step(nets, params, carry, obs, episode_start)
    return carry, dist, v


def init_networks(key: Array, nets: Networks, obs_size: int) -> dict:
    """``{"actor": ..., "critic": ...}`` initialised from ``key``.

    The built-in MLPs use :func:`init_params` (one shared normal draw); any other modules their
    own ``init`` with a key each.
    """
    if isinstance(nets.actor, Actor) and isinstance(nets.critic, Critic):
        return init_params(key, nets.actor, nets.critic, obs_size)
    dummy = jnp.zeros((obs_size,), jnp.float32)
    args: tuple = (dummy,)
    if is_recurrent(nets):
        carry = nets.initial_carry((1,))
        args = (dummy[None, None], jnp.ones((1, 1), bool))

    def init_one(key: Array) -> dict:
        k_actor, k_critic = jax.random.split(key)
        if is_recurrent(nets):
            return {"actor": nets.actor.init(k_actor, carry["actor"], *args),
                    "critic": nets.critic.init(k_critic, carry["critic"], *args)}
        return {"actor": nets.actor.init(k_actor, *args),
                "critic": nets.critic.init(k_critic, *args)}

    # One key after another under vmap, as init_params does (batched QR, see there).
    return jax.custom_batching.sequential_vmap(init_one)(key)


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
    kernel (flax's ``init`` folds a key per parameter: one threefry program per kernel, which
    compiles several times slower).

    Under ``jax.vmap`` the keys are initialised one after another (``sequential_vmap``): batched
    QR factorisations can deadlock XLA:CPU's intra-op thread pool on small hosts
    (``benchmarks/NOTES.md``).
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

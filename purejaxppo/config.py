"""Configuration: a frozen, validated dataclass of static settings and traced hyperparameters.

Fields split in two kinds. *Static* fields fix shapes and code (env, num_envs, num_steps, epochs,
minibatches, network, which loss): changing one recompiles. *Hyperparameters* (lr, clip_eps,
ent_coef, ...) are carried into the jitted program as a :class:`Hyperparams` pytree of arrays, so
``jax.vmap`` can sweep them inside one compiled program.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

# No JAX import at module level: the command line reads the fields (its flags) and answers
# --help and argument errors before it imports JAX.

ACTIVATIONS = ("tanh", "relu", "gelu", "silu")
EVAL_MODES = ("deterministic", "sampled", "both")
UPDATE_RULES = ("ppo", "trpo")
FLOAT32_MAX = 3.4028234663852886e38
"""The largest float32: hyperparameters are float32 arrays in the program."""
FLOAT32_MIN_NORMAL = 1.1754943508222875e-38
"""The smallest normal float32."""


class Hyperparams(NamedTuple):
    """Hyperparameters traced into the jitted program (each a scalar array): sweepable by vmap."""

    lr: Any
    clip_eps: Any
    ent_coef: Any
    vf_coef: Any
    gamma: Any
    gae_lambda: Any
    max_grad_norm: Any
    kl_target: Any
    kl_beta_init: Any
    max_kl: Any


HYPERPARAMS = Hyperparams._fields

HYPERPARAM_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": (lambda v: v > 0, "must be > 0"),
    "clip_eps": (lambda v: 0 < v < 1, "must be in (0, 1)"),
    "ent_coef": (lambda v: v >= 0, "must be >= 0"),
    "vf_coef": (lambda v: v >= 0, "must be >= 0"),
    "gamma": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "gae_lambda": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "max_grad_norm": (lambda v: v > 0, "must be > 0"),
    "kl_target": (lambda v: v > 0, "must be > 0"),
    "kl_beta_init": (lambda v: v >= 0, "must be >= 0"),
    "max_kl": (lambda v: v > 0, "must be > 0"),
}
"""Each hyperparameter's allowed values: ``(test, what is allowed)``."""

MAX_TIMESTEPS = 2**31 - 1
"""Largest ``total_timesteps``: environment-step counts are int32 on device."""


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO settings. Defaults are the standard CartPole-v1 setting (976 updates of 512 steps)."""

    env: str = "CartPole-v1"
    """Environment id: a gymnax id (e.g. CartPole-v1, Breakout-MinAtar) or one registered with
    purejaxppo.envs.register."""
    total_timesteps: int = 499_712
    """Environment steps in the whole run, summed over the parallel environments."""
    num_envs: int = 4
    """Parallel environments stepped in lock-step (vmap)."""
    num_steps: int = 128
    """Steps per environment in each rollout; a rollout holds num_envs * num_steps transitions."""
    update_epochs: int = 4
    """Passes of minibatch SGD over each rollout."""
    num_minibatches: int = 4
    """Minibatches per epoch; must divide num_envs * num_steps (num_envs for a recurrent network,
    whose minibatches are whole environment sequences)."""
    gamma: float = 0.99
    """Discount factor, in (0, 1]."""
    gae_lambda: float = 0.95
    """GAE lambda, in [0, 1]: 0 is one-step TD, 1 is Monte Carlo."""
    clip_eps: float = 0.2
    """PPO clip range eps: ratios are clipped to [1 - eps, 1 + eps] (also the value clip range)."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Gradients are clipped to this global norm before Adam."""
    lr: float = 2.5e-4
    """Adam learning rate (the initial one when anneal_lr)."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly over the run: update k (from 0) uses
    lr * (1 - k / num_updates), so the last update uses lr / num_updates; never below 0."""
    policy_loss: str = "ppo_clip"
    """Policy loss: ppo_clip, ppo_clip_log, importance_ratio, importance_log, policy_gradient or
    kl_penalty (purejaxppo.losses.POLICY_LOSSES)."""
    norm_adv: bool = True
    """Normalise advantages to zero mean, unit std within each minibatch (TRPO: the batch); a
    minibatch of one transition keeps its advantage as it is."""
    clip_value: bool = True
    """Use PPO's clipped value loss (range clip_eps) instead of the plain squared error.

    The clipped loss keeps each value within ``clip_eps`` of the rollout's value, in the units of
    the (possibly normalised) returns, for the whole update: with large unnormalised returns it
    slows the critic to ``clip_eps`` per update (Brax PPO does not clip; its presets turn it
    off)."""
    kl_target: float = 0.01
    """Target KL for the adaptive penalty of policy_loss='kl_penalty'."""
    kl_beta_init: float = 1.0
    """Initial KL penalty coefficient beta for policy_loss='kl_penalty'."""
    update_rule: str = "ppo"
    """'ppo': minibatch SGD on policy_loss; 'trpo': one trust-region step on the importance_ratio
    surrogate per rollout (see purejaxppo.trpo), the critic trained as in PPO."""
    max_kl: float = 0.01
    """TRPO's trust region: bound on the mean KL[pi_old || pi_new] of an accepted policy step."""
    cg_iters: int = 10
    """TRPO: conjugate-gradient iterations solving F x = g."""
    cg_damping: float = 0.1
    """TRPO: damping added to the Fisher-vector product, F + damping I, for a stable solve."""
    line_search_steps: int = 10
    """TRPO: candidate steps of the backtracking line search (the full step, then shrunk ones)."""
    line_search_decay: float = 0.5
    """TRPO: each backtracking step shrinks the step by this factor, in (0, 1)."""
    network: str = "mlp"
    """Network architecture, a name in purejaxppo.networks.registered_networks(): 'mlp' (separate
    MLPs), 'cnn' (a convolutional layer before the MLP, for [H, W, C] grids such as MinAtar's),
    'gru' or 'lstm' (an MLP encoder, a recurrent cell and a head each, for partially observed
    tasks; num_minibatches must divide num_envs)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the actor and of the critic (separate networks)."""
    activation: str = "tanh"
    """Hidden activation: tanh, relu, gelu or silu."""
    normalize_obs: bool = False
    """Normalise observations by running mean and std (kept in the train state)."""
    normalize_reward: bool = False
    """Scale rewards by the running std of the discounted return (kept in the train state)."""
    eval_every: int = 0
    """Evaluate the policy inside the program after every N-th update (metrics eval_return and
    eval_length, NaN at other updates); 0: never."""
    eval_episodes: int = 10
    """Episodes per evaluation, on fresh environments (one environment each)."""
    eval_mode: str = "deterministic"
    """Policy evaluated: 'deterministic' (most likely action / mean), 'sampled', or 'both'
    (then also eval_return_sampled and eval_length_sampled)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
                object.__setattr__(self, f.name, value.item())  # numpy / JAX scalars
        object.__setattr__(self, "hidden_sizes", _layer_widths(self.hidden_sizes))
        _validate(self)

    @property
    def batch_size(self) -> int:
        """Transitions per rollout: ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        """Transitions per minibatch: ``batch_size // num_minibatches``."""
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """Rollout-and-update iterations: ``total_timesteps // batch_size``."""
        return self.total_timesteps // self.batch_size

    def hyperparams(self) -> Hyperparams:
        """The traced hyperparameters of this config, as float32 scalars."""
        import jax.numpy as jnp

        return Hyperparams(*(jnp.asarray(getattr(self, f), jnp.float32) for f in HYPERPARAMS))

    def replace(self, **changes: Any) -> PPOConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON representation (``PPOConfig(**d)`` rebuilds it)."""
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d


def check_config(config: Any) -> PPOConfig:
    """``config`` if it is a :class:`PPOConfig`, else a TypeError saying how to build one."""
    if not isinstance(config, PPOConfig):
        hint = ("PPOConfig(**d) builds one from a dict such as a run's config.json"
                if isinstance(config, dict) else "e.g. PPOConfig(env='CartPole-v1')")
        raise TypeError(f"config must be a purejaxppo.PPOConfig, got {type(config).__name__}: "
                        f"{hint}")
    return config


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"PPOConfig.{name}={value!r} is invalid: {allowed}")


def _layer_widths(value: Any) -> tuple[int, ...]:
    """``hidden_sizes`` as a tuple of ints: a list/tuple of whole numbers, or one int."""
    allowed = "must be a list of positive layer widths such as [64, 64]"
    if isinstance(value, (bool, str, bytes)):
        _fail("hidden_sizes", value, allowed)
    if isinstance(value, int):
        value = (value,)
    try:
        widths = tuple(value)
    except TypeError:
        _fail("hidden_sizes", value, allowed)
    out = []
    for w in widths:
        w = w.item() if hasattr(w, "item") else w
        if (isinstance(w, bool) or not isinstance(w, (int, float))
                or (isinstance(w, float) and not math.isfinite(w)) or int(w) != w):
            _fail("hidden_sizes", value, allowed)
        out.append(int(w))
    return tuple(out)


def _finite_float(value: int | float) -> bool:
    """Whether ``value`` is a finite number that a float32 hyperparameter can hold the sign and
    size of (an int too large for a float is not)."""
    try:
        return math.isfinite(value) and abs(value) <= FLOAT32_MAX
    except OverflowError:
        return False


def _validate(c: PPOConfig) -> None:
    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        if f.type in ("int",) and (isinstance(value, bool) or not isinstance(value, int)):
            _fail(f.name, value, "must be an integer")
        if f.type == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            _fail(f.name, value, "must be a number")
        if f.type == "float" and not _finite_float(value):
            _fail(f.name, value, "must be a finite number")
        if f.type == "float" and value != 0 and abs(value) < FLOAT32_MIN_NORMAL:
            _fail(f.name, value, f"must be at least {FLOAT32_MIN_NORMAL:.3g} in magnitude, "
                  "float32's smallest normal number (hyperparameters are float32 in the "
                  "program, where it would round to 0)")
        if f.type == "bool" and not isinstance(value, bool):
            _fail(f.name, value, "must be true or false")
    if not isinstance(c.env, str) or not c.env:
        _fail("env", c.env, "must be an environment id such as 'CartPole-v1'")
    if not isinstance(c.network, str) or not c.network:
        _fail("network", c.network, "must be a network name such as 'mlp' or 'cnn'")
    for name in ("num_envs", "num_steps", "update_epochs", "num_minibatches", "total_timesteps"):
        if getattr(c, name) < 1:
            _fail(name, getattr(c, name), "must be a positive integer")
    if c.batch_size % c.num_minibatches:
        _fail("num_minibatches", c.num_minibatches,
              f"must divide num_envs * num_steps = {c.batch_size}")
    if c.total_timesteps > MAX_TIMESTEPS:
        _fail("total_timesteps", c.total_timesteps,
              f"must be at most {MAX_TIMESTEPS:,} (2^31 - 1: step counts are int32 on device); "
              "run longer training as several resumed runs")
    if c.total_timesteps < c.batch_size:
        _fail("total_timesteps", c.total_timesteps,
              f"must be at least one rollout, num_envs * num_steps = {c.batch_size}")
    if c.total_timesteps % c.batch_size:
        warnings.warn(
            f"total_timesteps={c.total_timesteps} is not a multiple of num_envs * num_steps = "
            f"{c.batch_size}: training runs {c.num_updates} updates = "
            f"{c.num_updates * c.batch_size} steps",
            stacklevel=4,
        )
    for name, (ok, allowed) in HYPERPARAM_RANGES.items():
        if not ok(getattr(c, name)):
            _fail(name, getattr(c, name), allowed)
    from purejaxppo.losses import POLICY_LOSSES  # JAX, imported only to validate

    if not isinstance(c.policy_loss, str) or c.policy_loss not in POLICY_LOSSES:
        _fail("policy_loss", c.policy_loss, f"must be one of {', '.join(POLICY_LOSSES)}")
    if not isinstance(c.update_rule, str) or c.update_rule not in UPDATE_RULES:
        _fail("update_rule", c.update_rule, f"must be one of {', '.join(UPDATE_RULES)}")
    for name in ("cg_iters", "line_search_steps"):
        if getattr(c, name) < 1:
            _fail(name, getattr(c, name), "must be a positive integer")
    if c.cg_damping < 0:
        _fail("cg_damping", c.cg_damping, "must be >= 0")
    if not 0.0 < c.line_search_decay < 1.0:
        _fail("line_search_decay", c.line_search_decay, "must be in (0, 1)")
    if not c.hidden_sizes or any(h < 1 for h in c.hidden_sizes):
        _fail("hidden_sizes", c.hidden_sizes, "must be one or more positive layer widths")
    if c.eval_every < 0:
        _fail("eval_every", c.eval_every, "must be >= 0 (0: no evaluation)")
    if c.eval_episodes < 1:
        _fail("eval_episodes", c.eval_episodes, "must be a positive integer")
    if not isinstance(c.eval_mode, str) or c.eval_mode not in EVAL_MODES:
        _fail("eval_mode", c.eval_mode, f"must be one of {', '.join(EVAL_MODES)}")
    if not isinstance(c.activation, str) or c.activation not in ACTIVATIONS:
        _fail("activation", c.activation, f"must be one of {', '.join(ACTIVATIONS)}")

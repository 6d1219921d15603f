"""make_train: the whole rollout-and-update loop as one pure function, ready for jit and vmap.

Data flows one way: config -> env -> rollout -> advantages -> losses -> update -> metrics.

    train = jax.jit(make_train(PPOConfig()))
    result = train(jax.random.key(0))
    results = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.key(0), 16))
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purejaxppo import rollout as rollout_lib
from purejaxppo import trpo
from purejaxppo.advantages import bootstrap_values, gae
from purejaxppo.config import Hyperparams, PPOConfig
from purejaxppo.env import EnvSpec, make_env
from purejaxppo.losses import get_policy_loss
from purejaxppo.metrics import explained_variance, mean_or_last
from purejaxppo.networks import Actor, Critic, init_params, make_networks
from purejaxppo.update import (
    Batch,
    PolicyLossSwitch,
    adapt_kl_beta,
    loss_fn,
    make_optimizer,
    sgd_epochs,
)

Array = jax.Array


class TrainState(NamedTuple):
    """Everything training carries from one update to the next (a pytree)."""

    params: dict
    """``{"actor": ..., "critic": ...}`` flax parameters."""
    opt_state: Any
    """optax state (global-norm clipping, Adam moments)."""
    env: rollout_lib.EnvCarry
    """Env states, last observations, episode trackers and normalisation statistics."""
    kl_beta: Array
    """KL penalty coefficient (adapted only when policy_loss is 'kl_penalty')."""
    last_return: Array
    """Mean return of the last update in which an episode finished."""
    last_length: Array
    """Mean length of the last update in which an episode finished."""
    update: Array
    """Updates done so far."""
    key: Array
    """PRNG key for the next update."""
    first_nonfinite: Array
    """Index of the first update whose losses or new parameters were NaN/Inf, -1 if none. From
    then on the parameters are frozen at their last finite values."""


class TrainResult(NamedTuple):
    """What ``train`` returns: the final state and per-update metrics ``[num_updates]``."""

    state: TrainState
    metrics: dict[str, Array]

    @property
    def params(self) -> dict:
        """The final actor and critic parameters."""
        return self.state.params


class Agent(NamedTuple):
    """The static pieces training is built from."""

    config: PPOConfig
    spec: EnvSpec
    actor: Actor
    critic: Critic


def all_finite(tree: Any) -> Array:
    """True when every element of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_agent(config: PPOConfig) -> Agent:
    """Creates (and checks) the environment and the networks for ``config``."""
    spec = make_env(config.env)
    actor, critic = make_networks(spec, config.hidden_sizes, config.activation)
    return Agent(config, spec, actor, critic)


def as_key(key: Array) -> Array:
    """Accepts a typed key (``jax.random.key``) or a legacy ``uint32[2]`` ``PRNGKey``."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
        raise TypeError(f"expected a PRNG key (jax.random.key or PRNGKey), got {key.dtype}"
                        f"{list(key.shape)}")
    return jax.random.wrap_key_data(key)


def init_state(agent: Agent, key: Array, hp: Hyperparams) -> TrainState:
    """The train state before the first update."""
    k_params, k_env, k_train = jax.random.split(as_key(key), 3)
    params = init_params(k_params, agent.actor, agent.critic, agent.spec.obs_size)
    opt_state = make_optimizer(hp.max_grad_norm).init(params)
    env = rollout_lib.init_env_carry(agent.spec, k_env, agent.config.num_envs)
    zero = jnp.zeros((), jnp.float32)
    return TrainState(params, opt_state, env, jnp.asarray(hp.kl_beta_init, jnp.float32), zero,
                      zero, jnp.zeros((), jnp.int32), k_train, jnp.full((), -1, jnp.int32))


def collect_batch(agent: Agent, state: TrainState, hp: Hyperparams, key: Array,
                  axis_name: str | None = None
                  ) -> tuple[rollout_lib.EnvCarry, Batch, rollout_lib.EpisodeSums]:
    """A rollout under ``state.params``, with GAE advantages and value targets, as a flat batch.

    Returns:
        ``(env carry after the rollout, batch [num_envs * num_steps], finished-episode sums)``.
    """
    config, actor, critic = agent.config, agent.actor, agent.critic
    params = state.params
    env, traj, episodes = rollout_lib.collect(
        agent.spec, actor, critic, params, state.env, key, config.num_steps, hp.gamma,
        config.normalize_obs, config.normalize_reward, axis_name)

    last_obs = rollout_lib.observe(env.normalizer, env.obs, config.normalize_obs)
    last_value = critic.apply(params["critic"], last_obs)
    # V of the states truncated episodes were cut in, in one batched call after the scan.
    final_values = critic.apply(params["critic"], traj.final_obs)
    next_values = bootstrap_values(traj.value, last_value, final_values, traj.terminated,
                                   traj.truncated)
    advantages, targets = gae(traj.reward, traj.value, next_values,
                              traj.terminated | traj.truncated, hp.gamma, hp.gae_lambda)

    def flat(x: Array) -> Array:
        return x.reshape(config.batch_size, *x.shape[2:])

    batch = Batch(flat(traj.obs), flat(traj.action), flat(traj.log_prob), flat(traj.value),
                  flat(advantages), flat(targets))
    return env, batch, episodes


def update_step(agent: Agent, state: TrainState, hp: Hyperparams,
                switch: PolicyLossSwitch | None = None, axis_name: str | None = None
                ) -> tuple[TrainState, dict[str, Array]]:
    """One iteration: collect a rollout, compute advantages, run the SGD epochs (or TRPO).

    Args:
        switch: picks the policy loss by a (traced) index; ``config.policy_loss`` when None.
        axis_name: data parallelism inside ``shard_map``: ``agent.config.num_envs`` is this
            device's share of the environments; gradients, normalisation statistics, episode
            sums, the KL of ``kl_penalty`` and the diagnostics are averaged over the axis, so the
            parameters stay identical on every device.
    """
    config, actor, critic = agent.config, agent.actor, agent.critic
    key, k_rollout, k_sgd = jax.random.split(state.key, 3)
    if axis_name is not None:
        # The key is replicated: give each device its own actions, env steps and shuffles.
        device = jax.lax.axis_index(axis_name)
        k_rollout, k_sgd = jax.random.fold_in(k_rollout, device), jax.random.fold_in(k_sgd, device)
    params = state.params
    env, batch, episodes = collect_batch(agent, state, hp, k_rollout, axis_name)
    if axis_name is not None:
        episodes = jax.tree.map(lambda x: jax.lax.psum(x, axis_name), episodes)

    frac = 1.0 - state.update / config.num_updates if config.anneal_lr else 1.0
    lr = hp.lr * frac
    if config.update_rule == "trpo":
        new_params, opt_state, info, trpo_info = trpo.trpo_update(
            params, state.opt_state, batch, k_sgd, lr, actor, critic, config, hp)
    else:
        objective = loss_fn
        if switch is not None or axis_name is not None:
            objective = functools.partial(loss_fn, switch=switch, axis_name=axis_name)
        new_params, opt_state, info = sgd_epochs(params, state.opt_state, batch, k_sgd, lr,
                                                 actor, critic, config, hp, state.kl_beta,
                                                 objective, axis_name)
        trpo_info = trpo.TRPOInfo.zeros()
    if axis_name is not None:
        info = jax.lax.pmean(info, axis_name)

    kl_beta = state.kl_beta
    if (config.policy_loss == "kl_penalty" if switch is None else "kl_penalty" in switch.names):
        # KL of the whole update, measured with the new parameters on the rollout's samples.
        new_log_prob = actor.apply(new_params["actor"], batch.obs).log_prob(batch.action)
        log_ratio = new_log_prob - batch.log_prob
        kl = jnp.mean(jnp.expm1(log_ratio) - log_ratio)
        if axis_name is not None:
            kl = jax.lax.pmean(kl, axis_name)
        kl_beta = adapt_kl_beta(kl_beta, kl, hp.kl_target)
        if switch is not None:
            kl_beta = jnp.where(switch.selects("kl_penalty"), kl_beta, state.kl_beta)

    # A non-finite loss or parameter stops learning: keep the last finite parameters (and optimiser
    # state) and remember the first bad update, which the caller reports.
    finite = all_finite((new_params, info.policy_loss, info.value_loss))
    healthy = finite & (state.first_nonfinite < 0)
    new_params, opt_state, kl_beta = jax.tree.map(
        lambda new, old: jnp.where(healthy, new, old),
        (new_params, opt_state, kl_beta), (params, state.opt_state, state.kl_beta))
    first_nonfinite = jnp.where((state.first_nonfinite < 0) & ~finite, state.update,
                                state.first_nonfinite)

    ep_return = mean_or_last(episodes.ret, episodes.count, state.last_return)
    ep_length = mean_or_last(episodes.length.astype(jnp.float32), episodes.count,
                             state.last_length)
    metrics = {
        "episode_return": ep_return,
        "episode_length": ep_length,
        "policy_loss": info.policy_loss,
        "value_loss": info.value_loss,
        "entropy": info.entropy,
        "approx_kl": info.approx_kl,
        "approx_kl_k1": info.approx_kl_k1,
        "clip_fraction": info.clip_fraction,
        "explained_variance": explained_variance(batch.value, batch.targets),
        "learning_rate": jnp.asarray(lr, jnp.float32),
        "kl_beta": state.kl_beta,
        "env_steps": (state.update + 1) * config.batch_size,
        "nonfinite": ~finite,
        "trpo_kl": trpo_info.kl,
        "trpo_line_search_steps": trpo_info.line_search_steps,
        "trpo_improvement": trpo_info.improvement,
    }
    if axis_name is not None:
        # Each device measured its share of the batch: report the devices' mean.
        metrics["explained_variance"] = jax.lax.pmean(metrics["explained_variance"], axis_name)
        metrics["env_steps"] = metrics["env_steps"] * jax.lax.psum(1, axis_name)
    new_state = TrainState(new_params, opt_state, env, kl_beta, ep_return, ep_length,
                           state.update + 1, key, first_nonfinite)
    return new_state, metrics


def loss_switch(config: PPOConfig, policy_losses: tuple[str, ...] | None,
                loss_index: Array | None) -> PolicyLossSwitch | None:
    """The :class:`PolicyLossSwitch` of ``policy_losses`` (None without them).

    ``loss_index`` defaults to the position of ``config.policy_loss`` among ``policy_losses``.
    """
    if policy_losses is None:
        return None
    if loss_index is None:
        if config.policy_loss not in policy_losses:
            raise ValueError(f"loss_index is required: config.policy_loss={config.policy_loss!r} "
                             f"is not one of policy_losses={policy_losses}")
        loss_index = policy_losses.index(config.policy_loss)
    return PolicyLossSwitch(policy_losses, jnp.asarray(loss_index, jnp.int32))


def check_policy_losses(policy_losses: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Validates names for :func:`make_train`'s ``policy_losses``."""
    if policy_losses is None:
        return None
    if isinstance(policy_losses, str) or not policy_losses:
        raise ValueError(f"policy_losses must be a non-empty tuple of names, got {policy_losses!r}")
    for name in policy_losses:
        get_policy_loss(name)
    return tuple(policy_losses)


def make_update(config: PPOConfig, policy_losses: tuple[str, ...] | None = None
                ) -> Callable[..., tuple]:
    """``update(state, hparams, loss_index=None) -> (state, metrics)``: one rollout-and-update.

    Compose it freely: ``jax.vmap(update)`` steps many seeds, a ``lax.scan`` over it is training.
    With ``policy_losses``, ``loss_index`` (traced, vmappable) picks the policy loss among them.
    """
    agent = make_agent(config)
    policy_losses = check_policy_losses(policy_losses)

    def update(state: TrainState, hparams: Hyperparams, loss_index: Array | None = None):
        return update_step(agent, state, hparams, loss_switch(config, policy_losses, loss_index))

    return update


def make_run(config: PPOConfig, policy_losses: tuple[str, ...] | None = None
             ) -> Callable[..., tuple]:
    """``run(state, hparams, num_updates, loss_index=None) -> (state, metrics)``: one scan.

    ``num_updates`` is static. Running chunks back to back equals one long run bit for bit.
    ``policy_losses`` and ``loss_index`` are those of :func:`make_update`.
    """
    update = make_update(config, policy_losses)

    def run(state: TrainState, hparams: Hyperparams, num_updates: int,
            loss_index: Array | None = None):
        return jax.lax.scan(lambda s, _: update(s, hparams, loss_index), state, None,
                            length=num_updates)

    return run


def make_init(config: PPOConfig) -> Callable[..., TrainState]:
    """``init(key, hparams=None) -> TrainState``."""
    agent = make_agent(config)

    def init(key: Array, hparams: Hyperparams | None = None) -> TrainState:
        return init_state(agent, key, config.hyperparams() if hparams is None else hparams)

    return init


def make_train(config: PPOConfig, policy_losses: tuple[str, ...] | None = None
               ) -> Callable[..., TrainResult]:
    """Builds ``train(key, hparams=None, loss_index=None) -> TrainResult``, a pure function.

    Every update (``config.num_updates`` of them) runs inside one ``lax.scan``, so
    ``jax.jit(train)`` is one compiled program and ``jax.vmap(train)`` trains many seeds (or, with
    batched ``hparams``, many hyperparameter settings) at once.

    Args:
        config: the static settings; its hyperparameters are the defaults of ``hparams``.
        policy_losses: names of :data:`purejaxppo.losses.POLICY_LOSSES`; when given, the policy
            loss is ``policy_losses[loss_index]``, chosen inside the program by ``lax.switch``,
            so a vmap over ``loss_index`` trains several losses at once. Without it the loss is
            ``config.policy_loss``, fixed at trace time.

    Returns:
        ``train(key, hparams=None, loss_index=None)``; ``key`` is a ``jax.random.key`` or a
        legacy ``PRNGKey``; ``loss_index`` defaults to ``config.policy_loss``'s position.
    """
    init, run = make_init(config), make_run(config, policy_losses)

    def train(key: Array, hparams: Hyperparams | None = None,
              loss_index: Array | None = None) -> TrainResult:
        hp = config.hyperparams() if hparams is None else hparams
        state, metrics = run(init(key, hp), hp, config.num_updates, loss_index)
        return TrainResult(state, metrics)

    return train

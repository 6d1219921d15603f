"""make_train: the whole rollout-and-update loop as one pure function, ready for jit and vmap.

Data flows one way: config -> env -> rollout -> advantages -> losses -> update -> metrics.

    train = jax.jit(make_train(PPOConfig()))
    result = train(jax.random.key(0))
    results = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.key(0), 16))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo import envs, evaluation, trpo
from purejaxppo import rollout as rollout_lib
from purejaxppo.advantages import bootstrap_values, gae
from purejaxppo.config import HYPERPARAM_RANGES, Hyperparams, PPOConfig, check_config
from purejaxppo.distributions import Categorical, DiagGaussian, MultiCategorical
from purejaxppo.envs import Box, Env, MultiDiscrete
from purejaxppo.losses import get_policy_loss
from purejaxppo.metrics import COMMON_METRICS, explained_variance, mean_or_last
from purejaxppo.networks import (
    Networks,
    init_networks,
    is_recurrent,
    make_networks,
    policy_and_value_step,
    value,
    value_step,
)
from purejaxppo.networks import initial_carry as netlib_initial_carry
from purejaxppo.update import (
    PPO_METRICS,
    Batch,
    PolicyLossSwitch,
    UpdateRule,
    leaf_layout,
    make_ppo_rule,
)

Array = jax.Array


class TrainState(NamedTuple):
    """Everything training carries from one update to the next (a pytree)."""

    params: dict
    """``{"actor": ..., "critic": ...}`` flax parameters."""
    opt_state: Any
    """The update rule's state: :class:`purejaxppo.update.PPOState` (Adam, KL coefficient) for
    PPO, Adam's state over every parameter for TRPO (only the critic's moments move: the actor
    takes the trust-region step)."""
    env_carry: rollout_lib.EnvCarry
    """Env states, last observations, episode trackers and normalisation statistics."""
    last_return: Array
    """Mean return of the last update in which an episode finished; NaN before the first."""
    last_length: Array
    """Mean length of the last update in which an episode finished; NaN before the first."""
    updates_done: Array
    """How many updates have been done (int32)."""
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
    env: Env
    nets: Networks


def all_finite(tree: Any) -> Array:
    """True when every element of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_agent(config: PPOConfig, networks: Networks | None = None) -> Agent:
    """Creates (and checks) the environment and the networks for ``config``.

    Args:
        networks: the actor and critic modules; by default ``config.network``'s
            (:func:`purejaxppo.networks.make_networks`).
    """
    check_config(config)
    env = envs.make(config.env)
    nets = make_networks(env, config) if networks is None else networks
    if not isinstance(nets, Networks):
        raise ValueError(f"networks must be purejaxppo.networks.Networks(actor=..., critic=...), "
                         f"got {type(nets).__name__}")
    if is_recurrent(nets) and config.num_envs % config.num_minibatches:
        raise ValueError(f"num_minibatches={config.num_minibatches} must divide num_envs="
                         f"{config.num_envs} for the recurrent network {config.network!r} "
                         "(minibatches are whole environment sequences)")
    if networks is not None or config.network not in BUILT_IN_NETWORKS:
        check_network_outputs(env, nets)
    return Agent(config=config, env=env, nets=nets)


BUILT_IN_NETWORKS = ("mlp", "cnn", "gru", "lstm")
"""The networks of :mod:`purejaxppo.networks`, whose outputs are tested; others are checked
by :func:`check_network_outputs` (one abstract evaluation, nothing computed)."""


def check_network_outputs(env: Env, nets: Networks) -> None:
    """A ValueError unless the actor returns the distribution of ``env``'s action space with its
    shape, and the critic one value per observation (both on a batch of 2, traced only).

    Discrete actions need a :class:`~purejaxppo.distributions.Categorical` of ``n`` logits,
    MultiDiscrete ones a :class:`~purejaxppo.distributions.MultiCategorical` of ``sum(nvec)``,
    Box ones a :class:`~purejaxppo.distributions.DiagGaussian` of ``action_size`` means.
    """
    batch = 2

    def outputs(key: Array) -> tuple[Any, Array]:
        params = init_networks(key, nets, env.obs_size)
        obs = jnp.zeros((batch, env.obs_size), jnp.float32)
        carry = netlib_initial_carry(nets, (batch,))
        _, dist, value = policy_and_value_step(nets, params, carry, obs,
                                               jnp.ones((batch,), bool))
        return dist, value

    dist, value = jax.eval_shape(outputs, jax.random.key(0))
    space = env.action_space
    if isinstance(space, Box):
        want, field, width = DiagGaussian, "mean", env.action_size
    elif isinstance(space, MultiDiscrete):
        want, field, width = MultiCategorical, "logits", env.action_size
    else:
        want, field, width = Categorical, "logits", env.action_size
    if not isinstance(dist, want):
        got = ("an array" if isinstance(dist, jax.ShapeDtypeStruct)
               else f"a {type(dist).__name__}")
        raise ValueError(f"the actor returned {got} for {env.env_id}'s "
                         f"{type(space).__name__} actions: it must return a {want.__name__} "
                         "(purejaxppo.distributions)")
    shape = getattr(dist, field).shape
    if shape != (batch, width):
        raise ValueError(f"the actor's {want.__name__} has {field} of shape {list(shape)} for "
                         f"{batch} observations: {env.env_id} needs [{batch}, {width}] (one "
                         f"{'mean' if field == 'mean' else 'logit'} per action)")
    if getattr(value, "shape", None) != (batch,):
        raise ValueError(f"the critic returned shape {list(getattr(value, 'shape', ()))} for "
                         f"{batch} observations: it must return one value each, [{batch}] (drop "
                         "the last axis)")


def make_rule(agent: Agent, switch: PolicyLossSwitch | None = None) -> UpdateRule:
    """The update rule ``agent.config.update_rule`` names."""
    if agent.config.update_rule == "trpo":
        return trpo.make_trpo_rule(agent.nets, agent.config)
    return make_ppo_rule(agent.nets, agent.config, switch)


def metric_names(config: PPOConfig, policy_losses: tuple[str, ...] | None = None
                 ) -> tuple[str, ...]:
    """The keys of ``TrainResult.metrics`` for ``config`` (common ones, then the rule's)."""
    if config.update_rule == "trpo":
        return (*COMMON_METRICS, *trpo.TRPO_METRICS, *eval_metric_names(config))
    kl = ("kl_beta",) if "kl_penalty" in (policy_losses or (config.policy_loss,)) else ()
    return (*COMMON_METRICS, *PPO_METRICS, *kl, *eval_metric_names(config))


def as_key(key: Array) -> Array:
    """Accepts a typed key (``jax.random.key``) or a legacy ``uint32[2]`` ``PRNGKey``."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
        raise TypeError(f"expected a PRNG key (jax.random.key or PRNGKey), got {key.dtype}"
                        f"{list(key.shape)}")
    return jax.random.wrap_key_data(key)


def check_hparams(hparams: Any) -> Hyperparams:
    """``hparams`` if it is a :class:`Hyperparams` of scalars, else one clear error.

    Raises:
        TypeError: not a ``Hyperparams``.
        ValueError: a field that is not a scalar (batched values need ``jax.vmap`` over them),
            or a concrete value outside its range (:data:`purejaxppo.config.HYPERPARAM_RANGES`;
            traced values, inside ``jit``, cannot be checked).
    """
    if not isinstance(hparams, Hyperparams):
        raise TypeError(f"hparams must be a purejaxppo.Hyperparams, got {type(hparams).__name__}: "
                        "build it with config.hyperparams() or Hyperparams(**fields), e.g. "
                        "config.hyperparams()._replace(lr=3e-4)")
    for name, field in zip(Hyperparams._fields, hparams, strict=True):
        if np.ndim(field) != 0:
            raise ValueError(f"hparams.{name} has shape {tuple(np.shape(field))}: one run takes "
                             "scalar hyperparameters; to train several values at once, batch "
                             "them and vmap, e.g. jax.vmap(train, in_axes=(None, 0))(key, hparams)")
        if isinstance(field, jax.core.Tracer):
            continue
        ok, allowed = HYPERPARAM_RANGES[name]
        number = float(np.asarray(field))
        if not (np.isfinite(number) and ok(number)):
            raise ValueError(f"hparams.{name}={number!r} is invalid: {allowed}")
    return hparams


def check_params(agent: Agent, params: Any) -> None:
    """ValueError unless ``params`` have the structure and shapes of ``agent``'s networks (params
    of another config, e.g. other ``hidden_sizes`` or another environment, fail here rather than
    deep inside a matrix product)."""
    expected = jax.eval_shape(
        lambda: init_networks(jax.random.key(0), agent.nets, agent.env.obs_size))
    want = jax.tree_util.tree_flatten_with_path(expected)[0]
    got = jax.tree_util.tree_flatten_with_path(params)[0]
    # Compared by path, so that the message can name a parameter that is not in both.
    want_paths, got_paths = _paths(expected), _paths(params)
    if want_paths != got_paths:
        odd = sorted(set(want_paths) ^ set(got_paths)) or want_paths
        raise ValueError("state.params do not fit this config's networks (another structure: "
                         f"{odd[0]} is not in both): was the state made with another config "
                         "or networks?")
    for (path, w), (_, g) in zip(want, got, strict=True):
        if tuple(np.shape(g)) != tuple(w.shape):
            raise ValueError(f"state.params{jax.tree_util.keystr(path)} has shape "
                             f"{tuple(np.shape(g))}, this config's networks expect "
                             f"{tuple(w.shape)}: was the state made with another config "
                             "(hidden_sizes, network, env)?")


def check_state(agent: Agent, state: TrainState, hp: Hyperparams) -> None:
    """ValueError unless ``state`` fits ``agent``'s config: its params (:func:`check_params`),
    its environments (``num_envs`` of ``env``'s observations) and its optimiser state (the
    structure ``config.update_rule``'s ``init`` gives). Shapes only, so it holds under ``jit``."""
    check_params(agent, state.params)
    want = (agent.config.num_envs, agent.env.obs_size)
    obs = getattr(state.env_carry, "obs", None)
    if tuple(np.shape(obs)) != want:
        raise ValueError(f"state.env_carry holds observations of shape {tuple(np.shape(obs))}, "
                         f"this config's environments {want} (num_envs, observation size): was "
                         "the state made with another config (num_envs, env)?")
    expected = jax.eval_shape(make_rule(agent).init, state.params, hp)
    if _paths(expected) != _paths(state.opt_state):  # by path: a FrozenDict is a dict here
        raise ValueError("state.opt_state is not the optimiser state of update_rule="
                         f"{agent.config.update_rule!r}: was the state made with another config "
                         "(update_rule)?")


def init_state(agent: Agent, key: Array, hp: Hyperparams) -> TrainState:
    """The train state before the first update."""
    check_hparams(hp)
    k_params, k_env, k_train = jax.random.split(as_key(key), 3)
    params = init_networks(k_params, agent.nets, agent.env.obs_size)
    nan = jnp.full((), jnp.nan, jnp.float32)
    return TrainState(
        params=params,
        opt_state=make_rule(agent).init(params, hp),
        env_carry=rollout_lib.init_env_carry(agent.env, k_env, agent.config.num_envs,
                                             agent.nets),
        last_return=nan,
        last_length=nan,
        updates_done=jnp.zeros((), jnp.int32),
        key=k_train,
        first_nonfinite=jnp.full((), -1, jnp.int32),
    )


def collect(agent: Agent, state: TrainState, hp: Hyperparams, key: Array
            ) -> tuple[rollout_lib.EnvCarry, rollout_lib.Transition, rollout_lib.EpisodeSums]:
    """Stage 1: a rollout of ``num_steps`` steps under ``state.params``."""
    config = agent.config
    return rollout_lib.collect(agent.env, agent.nets, state.params, state.env_carry, key,
                               config.num_steps, hp.gamma, config.normalize_obs,
                               config.normalize_reward)


def advantages_batch(agent: Agent, params: dict, env_carry: rollout_lib.EnvCarry,
                     traj: rollout_lib.Transition, hp: Hyperparams) -> Batch:
    """Stage 2: GAE advantages and value targets, as a flat batch ``[num_envs * num_steps]``.

    Truncated episodes bootstrap from ``V(final_obs)``, computed in one batched call. Recurrent
    networks keep the rollout's time-major sequences ``[num_steps, num_envs]`` with the hidden
    state each starts from; their ``V(final_obs)`` was taken in the rollout, from the hidden
    state before the episode-start reset, and the last step bootstraps from the critic stepped
    once more on the carry.
    """
    config, nets = agent.config, agent.nets
    last_obs = rollout_lib.observe(env_carry.normalizer, env_carry.obs, config.normalize_obs)
    rec = env_carry.recurrent
    if rec is None:
        last_value = value(nets, params, last_obs)
        final_values = value(nets, params, traj.final_obs)
    else:
        _, last_value = value_step(nets, params, rec.hidden, last_obs, rec.episode_start)
        final_values = traj.final_value
    next_values = bootstrap_values(traj.value, last_value, final_values, traj.terminated,
                                   traj.truncated)
    advantages, targets = gae(traj.reward, traj.value, next_values,
                              traj.terminated | traj.truncated, hp.gamma, hp.gae_lambda)

    if rec is not None:
        return Batch(obs=traj.obs, action=traj.action, log_prob=traj.log_prob, value=traj.value,
                     advantages=advantages, targets=targets,
                     carry=jax.tree.map(lambda x: x[0], traj.carry),
                     episode_start=traj.episode_start)

    def flat(x: Array) -> Array:
        return x.reshape(config.batch_size, *x.shape[2:])

    return Batch(obs=flat(traj.obs), action=flat(traj.action), log_prob=flat(traj.log_prob),
                 value=flat(traj.value), advantages=flat(advantages), targets=flat(targets),
                 action_mask=None if traj.action_mask is None else flat(traj.action_mask))


def collect_batch(agent: Agent, state: TrainState, hp: Hyperparams, key: Array
                  ) -> tuple[rollout_lib.EnvCarry, Batch, rollout_lib.EpisodeSums]:
    """Stages 1 and 2: ``(env carry after the rollout, batch, finished-episode sums)``."""
    env_carry, traj, episodes = collect(agent, state, hp, key)
    return env_carry, advantages_batch(agent, state.params, env_carry, traj, hp), episodes


def annealed_hparams(config: PPOConfig, hp: Hyperparams, updates_done: Array) -> Hyperparams:
    """``hp`` with this update's learning rate: ``lr * max(1 - k / num_updates, 0)`` for
    update ``k`` (from 0) when ``config.anneal_lr``, else ``lr``."""
    if not config.anneal_lr:
        return hp
    return hp._replace(lr=hp.lr * jnp.maximum(1.0 - updates_done / config.num_updates, 0.0))


def same_container(like: Any, tree: Any) -> Any:
    """``tree``'s leaves in ``like``'s pytree structure, where the two differ only in their
    mapping types: an update rule may build a plain dict from parameters held in a flax
    ``FrozenDict``, and the train state keeps the type it was given."""
    want = jax.tree.structure(like)
    if jax.tree.structure(tree) == want or _paths(tree) != _paths(like):
        return tree
    return jax.tree.unflatten(want, jax.tree.leaves(tree))


def _paths(tree: Any) -> list[str]:
    """The path of each leaf of ``tree`` (``jax.tree_util.keystr``), in flattening order."""
    return [path for path, _ in leaf_layout(tree)]


def guard_nonfinite(state: TrainState, new_params: dict, opt_state: Any,
                    metrics: dict[str, Array]) -> tuple[dict, Any, Array, Array]:
    """Stage 4: a NaN/Inf in the new parameters or the rule's metrics stops learning.

    Returns:
        ``(params, opt_state, finite, first_nonfinite)``: the new ones if this and every earlier
        update were finite, else the last finite ones; ``first_nonfinite`` records the first bad
        update.
    """
    floats = [m for m in metrics.values() if jnp.issubdtype(m.dtype, jnp.floating)]
    finite = all_finite((new_params, floats))
    healthy = finite & (state.first_nonfinite < 0)
    # A conditional, not a select per leaf: the same values, ~0.3 s less compile for one seed
    # (benchmarks/NOTES.md); under vmap with a batched predicate JAX turns it into that select.
    params, opt_state = jax.lax.cond(healthy, lambda: (new_params, opt_state),
                                     lambda: (state.params, state.opt_state))
    first = jnp.where((state.first_nonfinite < 0) & ~finite, state.updates_done,
                      state.first_nonfinite)
    return params, opt_state, finite, first


EVAL_STREAM = 0x5EED
"""Evaluation draws its keys from ``fold_in(state.key, EVAL_STREAM)``: training's own random
stream is untouched, so results are the same with evaluation on or off."""


def eval_metric_names(config: PPOConfig) -> tuple[str, ...]:
    """The evaluation metrics of ``config`` (none when ``eval_every`` is 0)."""
    if not config.eval_every:
        return ()
    sampled = ("eval_return_sampled", "eval_length_sampled")
    if config.eval_mode == "both":
        return ("eval_return", "eval_length", *sampled)
    return ("eval_return", "eval_length")


def evaluate_stage(agent: Agent, params: dict, env_carry: rollout_lib.EnvCarry, key: Array,
                   due: Array) -> dict[str, Array]:
    """Stage 6 (when ``eval_every``): ``eval_episodes`` fresh episodes of the new policy where
    ``due``, NaN elsewhere (a ``lax.cond``, so nothing runs when ``due`` is an unbatched False)."""
    config = agent.config
    names = eval_metric_names(config)
    stats = env_carry.normalizer.obs if config.normalize_obs else None
    modes = {"deterministic": (True,), "sampled": (False,), "both": (True, False)}[config.eval_mode]

    def run() -> tuple[Array, ...]:
        out = []
        for deterministic in modes:
            ret, length, _ = evaluation.run_episodes(agent.env, agent.nets, params, stats, key,
                                                     config.eval_episodes, deterministic)
            out += [jnp.mean(ret), jnp.mean(length.astype(jnp.float32))]
        return tuple(out)

    def skip() -> tuple[Array, ...]:
        return tuple(jnp.full((), jnp.nan, jnp.float32) for _ in names)

    return dict(zip(names, jax.lax.cond(due, run, skip), strict=True))


def update_step(agent: Agent, state: TrainState, hp: Hyperparams,
                switch: PolicyLossSwitch | None = None, evaluate: Array | bool | None = None
                ) -> tuple[TrainState, dict[str, Array]]:
    """One iteration, in stages: collect, advantages, update rule, non-finite guard, metrics,
    and (``config.eval_every``) evaluation.

    Args:
        switch: picks the policy loss by a (traced) index; ``config.policy_loss`` when None.
        evaluate: whether to evaluate after this update; by default after every
            ``eval_every``-th update, from ``state.updates_done`` (under ``vmap`` pass it
            unbatched, as :func:`make_run` does, or every update computes the evaluation).
    """
    config = agent.config
    check_hparams(hp)
    check_state(agent, state, hp)
    key, k_rollout, k_update = jax.random.split(state.key, 3)
    env_carry, traj, episodes = collect(agent, state, hp, k_rollout)
    batch = advantages_batch(agent, state.params, env_carry, traj, hp)
    hp_now = annealed_hparams(config, hp, state.updates_done)
    new_params, opt_state, rule_metrics = make_rule(agent, switch).update(
        state.params, state.opt_state, batch, k_update, hp_now)
    new_params = same_container(state.params, new_params)
    params, opt_state, finite, first_nonfinite = guard_nonfinite(state, new_params, opt_state,
                                                                 rule_metrics)

    ep_return = mean_or_last(episodes.ret, episodes.count, state.last_return)
    ep_length = mean_or_last(episodes.length.astype(jnp.float32), episodes.count,
                             state.last_length)
    metrics = {
        "episode_return": ep_return,
        "episode_length": ep_length,
        "explained_variance": explained_variance(batch.value, batch.targets),
        "learning_rate": jnp.asarray(hp_now.lr, jnp.float32),
        "env_steps": (state.updates_done + 1) * config.batch_size,
        "nonfinite": ~finite,
        **rule_metrics,
    }
    if config.eval_every:
        if evaluate is None:
            evaluate = (state.updates_done + 1) % config.eval_every == 0
        metrics.update(evaluate_stage(agent, params, env_carry,
                                      jax.random.fold_in(state.key, EVAL_STREAM), evaluate))
    new_state = TrainState(params=params, opt_state=opt_state, env_carry=env_carry,
                           last_return=ep_return, last_length=ep_length,
                           updates_done=state.updates_done + 1, key=key,
                           first_nonfinite=first_nonfinite)
    return new_state, metrics


def loss_switch(config: PPOConfig, policy_losses: tuple[str, ...] | None,
                loss_index: Array | None) -> PolicyLossSwitch | None:
    """The :class:`PolicyLossSwitch` of ``policy_losses`` (None without them).

    ``loss_index`` defaults to the position of ``config.policy_loss`` among ``policy_losses``.
    It must be an integer; a concrete value outside ``[0, len(policy_losses))`` is a
    ValueError, and a traced one (inside ``jit``/``vmap``) is clamped to that range, once, so
    that the loss and its coefficients (``kl_beta``) always belong to the same entry.
    """
    if policy_losses is None:
        if loss_index is not None:
            raise ValueError("loss_index picks among policy_losses: build the function with "
                             "make_train(config, policy_losses=(...)) to use it")
        return None
    if loss_index is None:
        if config.policy_loss not in policy_losses:
            raise ValueError(f"loss_index is required: config.policy_loss={config.policy_loss!r} "
                             f"is not one of policy_losses={policy_losses}")
        loss_index = policy_losses.index(config.policy_loss)
    n = len(policy_losses)
    if not jnp.issubdtype(jnp.result_type(loss_index), jnp.integer):
        raise ValueError(f"loss_index must be an integer index into policy_losses={policy_losses}, "
                         f"got {jnp.result_type(loss_index)}")
    if not isinstance(loss_index, jax.core.Tracer) and not (
            (np.asarray(loss_index) >= 0) & (np.asarray(loss_index) < n)).all():
        raise ValueError(f"loss_index={np.asarray(loss_index).tolist()} is out of range: "
                         f"policy_losses={policy_losses} has indices 0..{n - 1}")
    index = jnp.clip(jnp.asarray(loss_index, jnp.int32), 0, n - 1)
    return PolicyLossSwitch(names=policy_losses, index=index)


def check_policy_losses(config: PPOConfig, policy_losses: tuple[str, ...] | None
                        ) -> tuple[str, ...] | None:
    """Validates names for :func:`make_train`'s ``policy_losses``."""
    if policy_losses is None:
        return None
    if isinstance(policy_losses, str) or not policy_losses:
        raise ValueError(f"policy_losses must be a non-empty tuple of names, got {policy_losses!r}")
    if config.update_rule != "ppo":
        raise ValueError(f"policy_losses picks PPO's policy loss; update_rule="
                         f"{config.update_rule!r} has none")
    for name in policy_losses:
        get_policy_loss(name)
    return tuple(policy_losses)


def memory_estimate(config: PPOConfig, num_seeds: int = 1, networks: Networks | None = None
                    ) -> int:
    """Bytes a run of ``num_seeds`` seeds needs on its device, estimated without compiling.

    Per seed: the train state (``jax.eval_shape`` of ``init``: parameters, optimiser state,
    environment states) twice (a scan's carry in and out), the rollout's transitions
    (observation and final observation, action, five scalars per step), its pre-drawn noise and
    resets, the shuffled copy of the batch, the per-update metrics, the minibatch epochs' keys
    and per-step diagnostics (``update_epochs x num_minibatches``, stacked within an update: PPO's
    six, the value loss of TRPO's critic) and (``eval_every``) the evaluation episodes'
    environments; times 2 for XLA's temporaries. An estimate to refuse impossible runs early, not
    an exact figure.
    """
    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"num_seeds={num_seeds!r} is invalid: must be a positive integer")
    agent = make_agent(config, networks)
    env = agent.env
    state = jax.eval_shape(lambda k: init_state(agent, k, config.hyperparams()),
                           jax.random.key(0))
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)
                      if hasattr(x, "size") and not jnp.issubdtype(x.dtype, jax.dtypes.prng_key))
    steps = config.num_steps * config.num_envs
    transition = 4 * (2 * env.obs_size + env.action_size + 5)
    reset = min(env.state_nbytes() * steps, rollout_lib.PREDRAWN_RESET_BYTES)
    per_update = 4 * (len(metric_names(config)) + 1)
    per_seed = (2 * state_bytes + steps * (2 * transition + 4 * env.action_size) + reset
                + config.num_updates * per_update)
    # A key per epoch and the diagnostics of every minibatch step (TRPO's critic: its loss).
    per_step = len(PPO_METRICS) if config.update_rule == "ppo" else 1
    per_seed += config.update_epochs * (8 + 4 * config.num_minibatches * per_step)
    if config.eval_every:  # the evaluation episodes run side by side, one environment each
        per_seed += config.eval_episodes * eval_env_bytes(env)
    return 2 * num_seeds * per_seed


def eval_env_bytes(env: Env) -> int:
    """Bytes of one evaluation episode run beside the others: its environment state, its
    observations and action, and a few scalars."""
    return env.state_nbytes() + 4 * (3 * env.obs_size + env.action_size + 8)


def make_update(config: PPOConfig, policy_losses: tuple[str, ...] | None = None,
                networks: Networks | None = None) -> Callable[..., tuple]:
    """``update(state, hparams, loss_index=None) -> (state, metrics)``: one rollout-and-update.

    Compose it freely: ``jax.vmap(update)`` steps many seeds, a ``lax.scan`` over it is training.
    With ``policy_losses``, ``loss_index`` (traced, vmappable) picks the policy loss among them.
    ``networks`` is that of :func:`make_train`.
    """
    agent = make_agent(config, networks)
    policy_losses = check_policy_losses(config, policy_losses)

    def update(state: TrainState, hparams: Hyperparams, loss_index: Array | None = None,
               evaluate: Array | bool | None = None):
        return update_step(agent, state, hparams, loss_switch(config, policy_losses, loss_index),
                           evaluate)

    return update


def make_run(config: PPOConfig, policy_losses: tuple[str, ...] | None = None,
             networks: Networks | None = None) -> Callable[..., tuple]:
    """``run(state, hparams, num_updates, loss_index=None, first_update=0) -> (state, metrics)``.

    One scan of ``num_updates`` (static) updates. Running chunks back to back equals one long
    run bit for bit; pass ``first_update`` (the updates already in ``state``, an int or an
    unbatched scalar) so that evaluations (``config.eval_every``) fall on the same updates.
    ``policy_losses``, ``loss_index`` and ``networks`` are those of :func:`make_update`.
    """
    update = make_update(config, policy_losses, networks)

    def run(state: TrainState, hparams: Hyperparams, num_updates: int,
            loss_index: Array | None = None, first_update: Array | int = 0):
        if isinstance(num_updates, bool) or not isinstance(num_updates, int) or num_updates < 0:
            raise ValueError(f"num_updates={num_updates!r} is invalid: must be a Python int >= 0 "
                             "(the scan's static length)")
        if (not isinstance(first_update, jax.core.Tracer)
                and (np.ndim(first_update) or int(first_update) < 0)):
            raise ValueError(f"first_update={first_update!r} is invalid: must be the updates "
                             "already in state, a scalar >= 0")

        def body(s: TrainState, i: Array):
            due = (first_update + i + 1) % config.eval_every == 0 if config.eval_every else None
            return update(s, hparams, loss_index, due)

        return jax.lax.scan(body, state, jnp.arange(num_updates))

    return run


def make_init(config: PPOConfig, networks: Networks | None = None) -> Callable[..., TrainState]:
    """``init(key, hparams=None) -> TrainState``."""
    agent = make_agent(config, networks)

    def init(key: Array, hparams: Hyperparams | None = None) -> TrainState:
        return init_state(agent, key, config.hyperparams() if hparams is None else hparams)

    return init


def make_train(config: PPOConfig, policy_losses: tuple[str, ...] | None = None,
               networks: Networks | None = None) -> Callable[..., TrainResult]:
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
        networks: your own actor and critic (:class:`purejaxppo.networks.Networks`); by default
            the registered network ``config.network`` names.

    Returns:
        ``train(key, hparams=None, loss_index=None)``; ``key`` is a ``jax.random.key`` or a
        legacy ``PRNGKey``; ``loss_index`` defaults to ``config.policy_loss``'s position.
    """
    init, run = make_init(config, networks), make_run(config, policy_losses, networks)

    def train(key: Array, hparams: Hyperparams | None = None,
              loss_index: Array | None = None) -> TrainResult:
        hp = config.hyperparams() if hparams is None else hparams
        state, metrics = run(init(key, hp), hp, config.num_updates, loss_index)
        return TrainResult(state=state, metrics=metrics)

    return train

"""Hyperparameter search inside one compiled program: random search and population-based training.

    space = {"lr": ("log_uniform", 1e-5, 1e-2), "ent_coef": ("uniform", 0.0, 0.05),
             "policy_loss": ("choice", ["ppo_clip", "kl_penalty"])}
    found = random_search(config, space, num_samples=16, seeds=4, key=jax.random.key(0))
    print(found.markdown()); config = found.best_config()
    population = pbt(config, space, population=8, ready_every=10, key=jax.random.key(0))
    best = population.best()   # the winner's parameters and hyperparameter schedule

A *space* maps fields of :class:`~purejaxppo.config.Hyperparams` (and ``policy_loss``) to a
distribution: ``("log_uniform", lo, hi)``, ``("uniform", lo, hi)`` or ``("choice", [values])``;
fields absent from it keep the config's value. Hyperparameters are traced, so every sample (and
every member of a population) is one row of a ``vmap`` in one jitted program.

Population-based training follows Jaderberg et al., "Population Based Training of Neural
Networks" (2017, arXiv:1711.09846), with truncation selection: after every ``ready_every``
updates, members are ranked by their recent return; each member of the bottom ``fraction``
copies the learning state of a random member of the top ``fraction`` (*exploit*) and perturbs
the copied hyperparameters (*explore*).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purejaxppo.config import Hyperparams, PPOConfig, check_config
from purejaxppo.metrics import final_return, final_window
from purejaxppo.parallel import compiler_options
from purejaxppo.sweeps import (
    SWEEPABLE,
    choose_mesh,
    on_every_host,
    seed_keys,
    to_host,
    train_runs,
)
from purejaxppo.train import (
    TrainResult,
    TrainState,
    as_key,
    check_policy_losses,
    make_init,
    make_run,
)

Array = jax.Array

KINDS = ("log_uniform", "uniform", "choice")
"""Distributions a space may give a hyperparameter."""


class Dist(NamedTuple):
    """One hyperparameter's distribution: ``kind`` in :data:`KINDS`; ``low``/``high`` for the
    ranges, ``choices`` for ``"choice"``."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()


Space = dict[str, Dist]


# ---------------------------------------------------------------------------------------------
# The space: validation, sampling, perturbation.


def check_space(config: PPOConfig, space: Mapping[str, Any]) -> Space:
    """Validates a search space against ``config``.

    Every value the space can produce must be valid for :class:`PPOConfig` (the ranges' ends are
    checked: each field's valid set is an interval).

    Raises:
        ValueError: one line naming the key, what is wrong and what is allowed.
        TypeError: ``config`` is not a :class:`PPOConfig`.
    """
    check_config(config)
    if not isinstance(space, Mapping) or not space:
        raise ValueError(f"the search space must be a non-empty mapping {{field: distribution}}, "
                         f"got {space!r}")
    checked: Space = {}
    for name, spec in space.items():
        if name not in SWEEPABLE:
            raise ValueError(f"search space key {name!r} cannot be searched inside one compiled "
                             f"program; searchable: {', '.join(SWEEPABLE)}")
        checked[name] = _check_dist(config, name, spec)
    if "policy_loss" in checked and config.update_rule != "ppo":
        raise ValueError(f"policy_loss cannot be searched with update_rule={config.update_rule!r}")
    return checked


def _is_float(v: Any) -> bool:
    """A number (not a bool) that a float holds: an int too large for one is not."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _check_dist(config: PPOConfig, name: str, spec: Any) -> Dist:
    forms = '("log_uniform", lo, hi), ("uniform", lo, hi) or ("choice", [values])'
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence) or not spec:
        raise ValueError(f"space[{name!r}] = {spec!r} is invalid: give {forms}")
    kind = spec[0]
    if kind not in KINDS:
        raise ValueError(f"space[{name!r}] has kind {kind!r}: must be one of {', '.join(KINDS)}")
    if kind == "choice":
        if len(spec) != 2 or isinstance(spec[1], (str, bytes)) or not isinstance(spec[1], Sequence) \
                or not spec[1]:
            raise ValueError(f"space[{name!r}] = {spec!r} is invalid: give ('choice', [values]) "
                             "with at least one value")
        choices = tuple(v.item() if isinstance(v, np.generic) else v for v in spec[1])
        for v in choices:
            if name == "policy_loss" and not isinstance(v, str):
                raise ValueError(f"space['policy_loss'] choice {v!r} must be a policy loss name")
            if name != "policy_loss" and not _is_float(v):
                raise ValueError(f"space[{name!r}] choice {v!r} must be a finite number")
            config.replace(**{name: float(v) if name != "policy_loss" else v})
        if name != "policy_loss":
            choices = tuple(float(v) for v in choices)
        return Dist(kind="choice", choices=choices)
    if name == "policy_loss":
        raise ValueError(f"space['policy_loss'] must be ('choice', [names]), got {kind!r}")
    if len(spec) != 3 or not all(_is_float(v) for v in spec[1:]):
        raise ValueError(f"space[{name!r}] = {spec!r} is invalid: give ({kind!r}, lo, hi) with "
                         "two numbers")
    low, high = float(spec[1]), float(spec[2])
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise ValueError(f"space[{name!r}] range [{low}, {high}] is invalid: need finite lo < hi")
    if kind == "log_uniform" and low <= 0:
        raise ValueError(f"space[{name!r}] is log_uniform from {low}: lo must be > 0")
    for v in (low, high):
        config.replace(**{name: v})  # PPOConfig names the field, the value and the valid range
    return Dist(kind=kind, low=low, high=high)


def space_losses(space: Space) -> tuple[str, ...] | None:
    """The policy losses a space chooses among (``make_train``'s ``policy_losses``), or None."""
    if "policy_loss" not in space:
        return None
    return tuple(dict.fromkeys(space["policy_loss"].choices))


def _bounds(dist: Dist) -> tuple[Array, Array]:
    return jnp.float32(dist.low), jnp.float32(dist.high)


def _draw(dist: Dist, key: Array) -> Array:
    if dist.kind == "choice":
        return jnp.asarray(dist.choices, jnp.float32)[
            jax.random.randint(key, (), 0, len(dist.choices))]
    low, high = _bounds(dist)
    if dist.kind == "log_uniform":
        x = jnp.exp(jax.random.uniform(key, (), jnp.float32, jnp.log(low), jnp.log(high)))
    else:
        x = jax.random.uniform(key, (), jnp.float32, low, high)
    return jnp.clip(x, low, high)


def sample(space: Space, base: Hyperparams, key: Array) -> tuple[Hyperparams, Array | None]:
    """One draw from ``space``: ``(hparams, loss_index)``; fields outside the space keep ``base``.

    Each field draws from its own stream (``fold_in(key, its position in SWEEPABLE)``), so adding
    a field to a space does not change the others' draws. ``loss_index`` indexes
    :func:`space_losses` (None when the space has no ``policy_loss``). Jittable and vmappable.
    """
    values = base._asdict()
    loss_index = None
    for name, dist in space.items():
        k = jax.random.fold_in(key, SWEEPABLE.index(name))
        if name == "policy_loss":
            loss_index = jax.random.randint(k, (), 0, len(space_losses(space)))
        else:
            values[name] = _draw(dist, k)
    return Hyperparams(**values), loss_index


def explore(space: Space, hparams: Hyperparams, loss_index: Array | None, key: Array,
            resample_prob: float, perturb: tuple[float, float]
            ) -> tuple[Hyperparams, Array | None]:
    """PBT's explore step for one member: each field of the space, independently, is resampled
    from the space with probability ``resample_prob``; otherwise a range's value is multiplied
    by ``perturb[0]`` or ``perturb[1]`` (one at random) and clipped to the range, and a choice
    (``policy_loss`` too) is kept. Every result lies in the space."""
    k_fresh, k_decide = jax.random.split(key)
    fresh, fresh_loss = sample(space, hparams, k_fresh)
    values = hparams._asdict()
    for name, dist in space.items():
        k_resample, k_factor = jax.random.split(jax.random.fold_in(k_decide, SWEEPABLE.index(name)))
        resample = jax.random.uniform(k_resample) < resample_prob
        if name == "policy_loss":
            loss_index = jnp.where(resample, fresh_loss, loss_index)
            continue
        old = values[name]
        if dist.kind == "choice":
            moved = old
        else:
            factor = jnp.where(jax.random.bernoulli(k_factor), jnp.float32(perturb[1]),
                               jnp.float32(perturb[0]))
            moved = jnp.clip(old * factor, *_bounds(dist))
        values[name] = jnp.where(resample, getattr(fresh, name), moved)
    return Hyperparams(**values), loss_index


def sample_population(config: PPOConfig, space: Space, key: Array, n: int
                      ) -> tuple[Hyperparams, Array | None]:
    """``n`` independent draws (:func:`sample` with ``jax.random.split(key, n)``): hyperparameters
    of ``[n]`` float32 arrays and ``loss_index`` ``[n]`` (or None)."""
    keys = jax.random.split(as_key(key), n)
    hparams, loss_index = jax.vmap(lambda k: sample(space, config.hyperparams(), k))(keys)
    return jax.tree.map(np.asarray, hparams), None if loss_index is None else np.asarray(loss_index)


def _values(space: Space, hparams: Hyperparams, loss_index: Any, index: tuple,
            policy_losses: tuple[str, ...] | None) -> dict[str, Any]:
    """``{field: value}`` of the space's fields at ``index`` of batched hyperparameters."""
    out: dict[str, Any] = {}
    for name in space:
        if name == "policy_loss":
            out[name] = policy_losses[int(np.asarray(loss_index)[index])]
        else:
            out[name] = float(np.asarray(getattr(hparams, name))[index])
    return out


def _rank(returns: np.ndarray) -> np.ndarray:
    """Indices from best to worst return, NaN last, ties by index."""
    key = np.where(np.isnan(returns), -np.inf, returns)
    return np.argsort(-key, kind="stable")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------
# Random search.


@dataclasses.dataclass(frozen=True, repr=False)
class RandomSearchResult:
    """The runs of a random search: ``result`` leaves are ``[num_samples, num_seeds, ...]``."""

    result: TrainResult
    """Final states and per-update metrics of every sample x seed."""
    samples: list[dict[str, Any]]
    """The space's values of each sample (``policy_loss`` as a name)."""
    seeds: list
    """The seed labels (as in :func:`purejaxppo.sweep`)."""
    config: PPOConfig
    """The settings shared by every run (the samples override its hyperparameters)."""

    def final_returns(self) -> np.ndarray:
        """``[num_samples, num_seeds]`` (:func:`purejaxppo.metrics.final_return`)."""
        return final_return(to_host(self.result.metrics["episode_return"]))

    def mean_returns(self) -> np.ndarray:
        """Mean final return over seeds of each sample (NaN seeds ignored; NaN if all are)."""
        r = self.final_returns()
        finite = ~np.isnan(r)
        return np.where(finite.any(-1), np.where(finite, r, 0).sum(-1)
                        / np.maximum(finite.sum(-1), 1), np.nan)

    def ranking(self) -> list[int]:
        """Sample indices from best to worst mean final return (NaN last)."""
        return [int(i) for i in _rank(self.mean_returns())]

    def table(self) -> list[dict[str, Any]]:
        """One row per sample, best first: ``rank, sample``, the space's values, and the final
        return's mean, std, min and max over seeds."""
        returns, means = self.final_returns(), self.mean_returns()
        rows = []
        for rank, i in enumerate(self.ranking(), start=1):
            r = returns[i][~np.isnan(returns[i])]
            stats = ({"final_return": float(means[i]), "std": float(r.std()),
                      "min": float(r.min()), "max": float(r.max())} if r.size else
                     {"final_return": None, "std": None, "min": None, "max": None})
            rows.append({"rank": rank, "sample": i, **self.samples[i], **stats})
        return rows

    def markdown(self) -> str:
        """The :meth:`table` as markdown."""
        keys = list(self.samples[0])
        header = ["rank", "sample", *keys, f"final return (mean ± std, {len(self.seeds)} seeds)",
                  "min", "max"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.table():
            ret = ("no episode finished" if row["final_return"] is None else
                   f"{row['final_return']:.1f} ± {row['std']:.1f}")
            cells = [str(row["rank"]), str(row["sample"]), *(_fmt(row[k]) for k in keys), ret,
                     *("-" if row[k] is None else f"{row[k]:.1f}" for k in ("min", "max"))]
            lines.append("| " + " | ".join(cells) + " |")
        n = self.config.num_updates
        lines.append(f"\nFinal return: mean episode return over the last {final_window(n)} of "
                     f"{n} updates.")
        return "\n".join(lines)

    def best_config(self) -> PPOConfig:
        """``config`` with the best sample's values (the float32 values it trained with)."""
        return self.config.replace(**self.samples[self.ranking()[0]])

    def __repr__(self) -> str:
        return (f"RandomSearchResult(samples={len(self.samples)}, seeds={len(self.seeds)}, "
                f"env={self.config.env!r})")


def random_search(config: PPOConfig, space: Mapping[str, Any], num_samples: int,
                  seeds: int | Array = 4, key: Array | None = None, mesh: Mesh | None = None
                  ) -> RandomSearchResult:
    """Random search: ``num_samples`` draws from ``space``, each trained with every seed, all in
    one jitted program split over the devices (the machinery of :func:`purejaxppo.sweep`).

    Args:
        config: static settings, and the hyperparameters of fields absent from ``space``.
        space: ``{field: distribution}`` (module docstring; :func:`check_space`).
        num_samples: how many hyperparameter settings to draw.
        seeds: a number of seeds (keys ``jax.random.key(0..S-1)``) or an array of keys; every
            sample trains with the same seeds.
        key: the key of the draws (default ``jax.random.key(0)``); the same key, the same samples.
        mesh: devices to split the runs over (default: every device; see :func:`sweep`).

    Returns:
        A :class:`RandomSearchResult`; ``ranking()`` orders samples by mean final return over
        seeds, ``best_config()`` is the winner as a :class:`PPOConfig`.
    """
    dists = check_space(config, space)
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) \
            or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} must be a positive integer")
    keys, seed_labels = seed_keys(seeds)
    num_seeds = len(seed_labels)
    key = jax.random.key(0) if key is None else as_key(key)
    policy_losses = check_policy_losses(config, space_losses(dists))
    hparams, loss_index = sample_population(config, dists, key, int(num_samples))
    samples = [_values(dists, hparams, loss_index, (i,), policy_losses)
               for i in range(num_samples)]
    # Flat batch, sample-major: run b is sample b // S with seed b % S.
    run_hparams = jax.tree.map(lambda x: np.repeat(x, num_seeds), hparams)
    run_losses = None if loss_index is None else np.repeat(loss_index, num_seeds)
    key_data = np.asarray(jax.random.key_data(keys))
    key_data = np.tile(key_data, (int(num_samples),) + (1,) * (key_data.ndim - 1))
    run_keys = jax.random.wrap_key_data(key_data, impl=jax.random.key_impl(keys))
    result = train_runs(config, run_keys, run_hparams, policy_losses, run_losses, mesh)
    result = jax.tree.map(lambda x: x.reshape(int(num_samples), num_seeds, *x.shape[1:]), result)
    return RandomSearchResult(result=result, samples=samples, seeds=seed_labels, config=config)


# ---------------------------------------------------------------------------------------------
# Population-based training.


def recent_return(episode_return: Array) -> Array:
    """A member's score for one interval: ``episode_return [..., k]`` (the interval's updates)
    averaged, NaN (no episode finished yet) ignored; NaN where every update is NaN."""
    finite = ~jnp.isnan(episode_return)
    total = jnp.where(finite, episode_return, 0.0).sum(-1)
    count = finite.sum(-1)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def select_parents(score: Array, key: Array, fraction: float) -> Array:
    """Truncation selection: ``parent [P]`` for scores ``[P]``.

    The ``n = floor(fraction * P)`` members of lowest score (NaN lowest, ties by index) each draw
    a parent uniformly from the ``n`` of highest score; every other member is its own parent.
    """
    size = score.shape[0]
    n = int(fraction * size)
    own = jnp.arange(size)
    if n == 0:
        return own
    order = jnp.argsort(jnp.where(jnp.isnan(score), -jnp.inf, score), stable=True)
    chosen = order[size - n:][jax.random.randint(key, (n,), 0, n)]
    return own.at[order[:n]].set(chosen)


def copy_learning_state(state: TrainState, parent: Array) -> TrainState:
    """Exploit: member ``i`` takes member ``parent[i]``'s learning state, bit for bit.

    Copied: parameters, the update rule's optimiser state (Adam moments and step count; PPO's
    ``kl_beta``), the observation and return normalisation statistics, and the non-finite marker
    (which belongs to the parameters). Kept: the member's own environments (env states, last
    observations, episode trackers, per-environment discounted returns), its carried episode
    statistics, update count and PRNG key, so its environments keep running without a reset and
    its random stream stays its own.
    """
    def take(tree: Any) -> Any:
        return jax.tree.map(lambda x: x[parent], tree)

    norm = state.env_carry.normalizer
    normalizer = norm._replace(obs=take(norm.obs), ret=take(norm.ret))
    return state._replace(params=take(state.params), opt_state=take(state.opt_state),
                          env_carry=state.env_carry._replace(normalizer=normalizer),
                          first_nonfinite=take(state.first_nonfinite))


def exploit_and_explore(space: Space, state: TrainState, hparams: Hyperparams,
                        loss_index: Array | None, score: Array, key: Array, fraction: float,
                        resample_prob: float, perturb: tuple[float, float]
                        ) -> tuple[TrainState, Hyperparams, Array | None, Array]:
    """One PBT step over a population (leading axis ``P``): :func:`select_parents`, then each
    member that got a parent copies its learning state (:func:`copy_learning_state`) and its
    hyperparameters, which it perturbs (:func:`explore`). Returns ``(state, hparams,
    loss_index, parent)``."""
    k_select, k_explore = jax.random.split(key)
    parent = select_parents(score, k_select, fraction)
    copied = parent != jnp.arange(parent.shape[0])
    state = copy_learning_state(state, parent)
    keys = jax.random.split(k_explore, parent.shape[0])
    inherited = jax.tree.map(lambda x: x[parent], (hparams, loss_index))
    moved = jax.vmap(lambda h, i, k: explore(space, h, i, k, resample_prob, perturb))(
        *inherited, keys)
    hparams, loss_index = jax.tree.map(lambda new, old: jnp.where(copied, new, old), moved,
                                       (hparams, loss_index))
    return state, hparams, loss_index, parent


class PBTBest(NamedTuple):
    """The winner of a population."""

    member: int
    """Its index in the population."""
    final_return: float
    """Its final return (:func:`purejaxppo.metrics.final_return`)."""
    params: dict
    """Its final actor and critic parameters."""
    schedule: list[dict[str, Any]]
    """The hyperparameters its final parameters were trained with, one row per interval
    (``start_update``, ``member`` whose slot trained them then, the space's values), following
    its lineage back through every copy."""


@dataclasses.dataclass(frozen=True, repr=False)
class PBTResult:
    """A trained population: ``result`` leaves are ``[population, ...]``; schedules are
    ``[intervals, population]``."""

    result: TrainResult
    """Every member's final state and per-update metrics ``[P, num_updates]``."""
    hparams: Hyperparams
    """The hyperparameters each member trained with in each interval, ``[intervals, P]``."""
    loss_index: np.ndarray | None
    """Index into ``policy_losses`` of each member in each interval (None without policy_loss)."""
    parents: np.ndarray
    """``[intervals - 1, P]``: whose learning state member ``i`` took after interval ``k``
    (``i`` itself when it kept its own): the lineage."""
    scores: np.ndarray
    """``[intervals, P]``: the recent return each member was ranked by after each interval."""
    starts: list[int]
    """The first update of each interval."""
    space: Space
    """The checked search space."""
    policy_losses: tuple[str, ...] | None
    """The losses ``loss_index`` indexes."""
    member_keys: Array
    """``[P]``: the key member ``i`` was initialised and trained from
    (``make_train(config)(member_keys[i], ...)`` is its run without exploits)."""
    config: PPOConfig
    """The static settings shared by every member."""

    @property
    def population(self) -> int:
        """Number of members."""
        return len(self.final_returns())

    def final_returns(self) -> np.ndarray:
        """``[P]`` final return of each member (:func:`purejaxppo.metrics.final_return`)."""
        return final_return(to_host(self.result.metrics["episode_return"]))

    def ranking(self) -> list[int]:
        """Members from best to worst final return (NaN last)."""
        return [int(i) for i in _rank(self.final_returns())]

    def values(self, interval: int, member: int) -> dict[str, Any]:
        """The space's values member ``member`` trained with in interval ``interval``."""
        return _values(self.space, self.hparams, self.loss_index, (interval, member),
                       self.policy_losses)

    def lineage(self, member: int) -> list[int]:
        """For each interval, the member whose slot trained the parameters ``member`` ends with
        (the last entry is ``member``; earlier ones follow ``parents`` backwards)."""
        chain = [int(member)]
        for k in range(len(self.starts) - 2, -1, -1):
            chain.append(int(self.parents[k, chain[-1]]))
        return chain[::-1]

    def schedule(self, member: int, follow_lineage: bool = True) -> list[dict[str, Any]]:
        """One row per interval: ``start_update``, ``member``, the space's values. With
        ``follow_lineage`` the rows follow :meth:`lineage` (the schedule that produced the
        member's final parameters); otherwise they are the member's own slot."""
        who = self.lineage(member) if follow_lineage else [int(member)] * len(self.starts)
        return [{"start_update": s, "member": m, **self.values(k, m)}
                for k, (s, m) in enumerate(zip(self.starts, who, strict=True))]

    def best(self) -> PBTBest:
        """The member of highest final return: its parameters and hyperparameter schedule."""
        member = self.ranking()[0]
        params = jax.tree.map(lambda x: to_host(x)[member], self.result.state.params)
        return PBTBest(member=member, final_return=float(self.final_returns()[member]),
                       params=params, schedule=self.schedule(member))

    def table(self) -> list[dict[str, Any]]:
        """One row per interval and member: ``interval, start_update, member``, the space's
        values, ``score`` (recent return, None if no episode finished) and ``parent`` (whose
        state it took after the interval; itself if none, None after the last interval)."""
        rows = []
        for k, start in enumerate(self.starts):
            for i in range(self.scores.shape[1]):
                score = float(self.scores[k, i])
                parent = int(self.parents[k, i]) if k < len(self.parents) else None
                rows.append({"interval": k, "start_update": start, "member": i,
                             **self.values(k, i), "score": None if math.isnan(score) else score,
                             "parent": parent})
        return rows

    def markdown(self) -> str:
        """Per member: final return, copies it made, and its final hyperparameters."""
        keys = list(self.space)
        header = ["rank", "member", "final return", "times replaced", *(f"final {k}" for k in keys)]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        returns = self.final_returns()
        replaced = (self.parents != np.arange(self.parents.shape[1])).sum(0)
        last = len(self.starts) - 1
        for rank, i in enumerate(self.ranking(), start=1):
            ret = "-" if np.isnan(returns[i]) else f"{returns[i]:.1f}"
            values = self.values(last, i)
            cells = [str(rank), str(i), ret, str(int(replaced[i])), *(_fmt(values[k]) for k in keys)]
            lines.append("| " + " | ".join(cells) + " |")
        n = self.config.num_updates
        lines.append(f"\nFinal return: mean episode return over the last {final_window(n)} of "
                     f"{n} updates; {len(self.starts)} intervals of up to "
                     f"{self.starts[1] if len(self.starts) > 1 else n} updates.")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"PBTResult(population={self.population}, intervals={len(self.starts)}, "
                f"env={self.config.env!r})")


def check_pbt_args(config: PPOConfig, population: int, ready_every: int, fraction: float = 0.25,
                   resample_prob: float = 0.2, perturb: tuple[float, float] = (0.8, 1.25)) -> None:
    """Validates :func:`pbt`'s arguments (ValueError, one line naming the argument)."""
    for name, value in (("population", population), ("ready_every", ready_every)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if ready_every > config.num_updates:
        raise ValueError(f"ready_every={ready_every} is more than the run's {config.num_updates} "
                         "updates: no member would ever be ready; lower it or raise "
                         "total_timesteps")
    if not _is_real(fraction) or not 0.0 <= fraction <= 0.5:
        raise ValueError(f"fraction={fraction!r} must be in [0, 0.5] (the bottom and the top "
                         "fraction must not overlap)")
    if not _is_real(resample_prob) or not 0.0 <= resample_prob <= 1.0:
        raise ValueError(f"resample_prob={resample_prob!r} must be in [0, 1]")
    factors = tuple(perturb) if isinstance(perturb, (tuple, list)) else ()
    tiny, huge = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
    if len(factors) != 2 or not all(_is_real(f) and tiny <= f <= huge for f in factors):
        raise ValueError(f"perturb={perturb!r} must be two positive finite factors, e.g. "
                         "(0.8, 1.25)")


def _is_real(value: Any) -> bool:
    """A real number (a Python or NumPy int or float, not a bool)."""
    return (not isinstance(value, (bool, np.bool_))
            and isinstance(value, (int, float, np.integer, np.floating)))


def pbt(config: PPOConfig, space: Mapping[str, Any], population: int, ready_every: int,
        key: Array | None = None, *, fraction: float = 0.25, resample_prob: float = 0.2,
        perturb: tuple[float, float] = (0.8, 1.25), mesh: Mesh | None = None) -> PBTResult:
    """Population-based training (Jaderberg et al. 2017, arXiv:1711.09846) in one jitted program.

    Members start from independent draws of ``space`` and independent keys. The run is split
    into intervals of ``ready_every`` updates (the last one takes what remains); after each
    interval but the last, members are ranked by their mean ``episode_return`` over the interval
    (NaN, no episode finished, ranks lowest), and the bottom ``fraction`` copy the learning
    state of a random member of the top ``fraction`` (:func:`copy_learning_state`: not its
    environments nor its key) and perturb the copied hyperparameters (:func:`explore`: x0.8 or
    x1.25 clipped to the space, resampled with probability ``resample_prob``; ``policy_loss``
    and other choices only resample). ``kl_beta_init`` only sets the coefficient a member starts
    with: an exploit copies the adapted ``kl_beta``.

    The intervals are one ``lax.scan`` over a ``vmap`` of the population; the population axis
    is split over the devices (``jax.jit``'s partitioner, which gathers across devices only for
    the exploit). A member's learning rate anneals with its update count, so intervals compose
    exactly: a population of one (or ``fraction=0``) equals
    ``make_train(config)(member_keys[i], hparams)`` per member to float32 rounding, evaluations
    (``config.eval_every``) on the same updates included (the batched,
    chunked program may order float sums differently; tested).

    Args:
        config: static settings and the hyperparameters of fields absent from ``space``.
        space: ``{field: distribution}``; members' initial values are drawn from it.
        population: number of members.
        ready_every: updates between exploit steps, at most ``config.num_updates``.
        key: the one key of everything: members' keys, initial draws, selections, explores.
        fraction: bottom and top fraction for truncation selection, in [0, 0.5].
        resample_prob: probability that explore redraws a field instead of perturbing it.
        perturb: the two factors explore multiplies a range's value by.
        mesh: devices to split the population over (default: every device that divides it).
    """
    dists = check_space(config, space)
    check_pbt_args(config, population, ready_every, fraction, resample_prob, perturb)
    population, ready_every = int(population), int(ready_every)
    n = config.num_updates
    intervals = -(-n // ready_every)
    last = n - (intervals - 1) * ready_every
    key = jax.random.key(0) if key is None else as_key(key)
    k_members, k_hparams, k_pbt = jax.random.split(key, 3)
    member_keys = jax.random.split(k_members, population)
    policy_losses = check_policy_losses(config, space_losses(dists))
    hparams, loss_index = sample_population(config, dists, k_hparams, population)
    init, run = jax.vmap(make_init(config)), make_run(config, policy_losses)
    impl = jax.random.key_impl(member_keys)

    use = choose_mesh(population, mesh)
    sharding = None if use is None else NamedSharding(use, PartitionSpec(use.axis_names))

    def constrain(tree: Any) -> Any:
        if sharding is None:
            return tree
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

    def train_for(state: TrainState, hp: Hyperparams, li: Array | None, length: int,
                  first: Array | int):
        # ``first`` (the updates before the interval, the same for every member) places the
        # evaluations (``config.eval_every``) on the updates a plain run evaluates at.
        return jax.vmap(lambda s, h, i: run(s, h, length, i, first))(state, hp, li)

    def program(key_data: Array, hp: Hyperparams, li: Array | None, pbt_keys: Array):
        state = constrain(init(jax.random.wrap_key_data(key_data, impl=impl), hp))

        def interval(carry, xs):
            state, hp, li = carry
            k, first = xs
            state, metrics = train_for(state, hp, li, ready_every, first)
            score = recent_return(metrics["episode_return"])
            new_state, new_hp, new_li, parent = exploit_and_explore(
                dists, state, hp, li, score, k, fraction, resample_prob, perturb)
            return constrain((new_state, new_hp, new_li)), (metrics, hp, li, score, parent)

        firsts = jnp.arange(intervals - 1) * ready_every
        (state, hp, li), (metrics, hps, lis, scores, parents) = jax.lax.scan(
            interval, (state, hp, li), (jax.random.wrap_key_data(pbt_keys, impl=impl), firsts))
        state, last_metrics = train_for(state, hp, li, last, (intervals - 1) * ready_every)
        return state, metrics, hps, lis, scores, parents, last_metrics, hp, li, recent_return(
            last_metrics["episode_return"])

    pbt_keys = np.asarray(jax.random.key_data(jax.random.split(k_pbt, intervals - 1)))
    out = jax.jit(program, compiler_options=compiler_options())(
        np.asarray(jax.random.key_data(member_keys)), hparams, loss_index, pbt_keys)
    state, *rest = jax.block_until_ready(out)
    state = on_every_host(state)
    metrics, hps, lis, scores, parents, last_metrics, hp, li, last_score = jax.tree.map(to_host,
                                                                                     rest)

    def join(chunks: np.ndarray, tail: np.ndarray) -> np.ndarray:  # [K-1, P, r], [P, last]
        head = np.moveaxis(chunks, 0, 1).reshape(population, -1, *chunks.shape[3:])
        return np.concatenate([head, tail], axis=1)

    metrics = {k: join(metrics[k], last_metrics[k]) for k in last_metrics}
    schedule = jax.tree.map(lambda s, x: np.concatenate([s, x[None]]), hps, hp)
    return PBTResult(
        result=TrainResult(state=state, metrics=metrics),
        hparams=schedule,
        loss_index=None if li is None else np.concatenate([lis, li[None]]),
        parents=np.asarray(parents, np.int64),
        scores=np.concatenate([scores, last_score[None]]),
        starts=[k * ready_every for k in range(intervals)],
        space=dists, policy_losses=policy_losses, member_keys=member_keys, config=config)

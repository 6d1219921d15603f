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
from jax.sharding import Mesh

from purejaxppo.config import Hyperparams, PPOConfig
from purejaxppo.metrics import final_return, final_window
from purejaxppo.sweeps import SWEEPABLE, seed_keys, to_host, train_runs
from purejaxppo.train import TrainResult, as_key, check_policy_losses

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
    """
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
            if name != "policy_loss" and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"space[{name!r}] choice {v!r} must be a number")
            config.replace(**{name: float(v) if name != "policy_loss" else v})
        if name != "policy_loss":
            choices = tuple(float(v) for v in choices)
        return Dist(kind="choice", choices=choices)
    if name == "policy_loss":
        raise ValueError(f"space['policy_loss'] must be ('choice', [names]), got {kind!r}")
    if len(spec) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, float))
                             for v in spec[1:]):
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

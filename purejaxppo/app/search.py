"""``purejaxppo search``: random search or population-based training, run and saved.

The search itself is the library's (:func:`purejaxppo.search.random_search`,
:func:`purejaxppo.search.pbt`); this module turns the command's settings into a call and the
result into the files of a training run (config.json, metrics.csv, summary.json, returns.png)
plus search.csv (and, for PBT, pbt.png; for random search, best_config.json).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from purejaxppo.app import outputs
from purejaxppo.app.experiment import device_description, versions, write_config
from purejaxppo.app.presets import RunOptions, read_mapping_file, settings_dict
from purejaxppo.config import PPOConfig
from purejaxppo.metrics import FINAL_FRACTION, final_window
from purejaxppo.search import PBTResult, RandomSearchResult, pbt, random_search

METHODS = ("random", "pbt")


class SearchSettings(NamedTuple):
    """What ``purejaxppo search`` searches, besides the config and the run options."""

    method: str
    """``"random"`` or ``"pbt"``."""
    space: dict[str, Any]
    """The search space as read from the space file."""
    population: int
    """Random search: samples drawn; PBT: members."""
    ready_every: int
    """PBT: updates between exploit steps."""
    fraction: float
    """PBT: bottom and top fraction of truncation selection."""
    resample_prob: float
    """PBT: probability that explore redraws a value instead of perturbing it."""


def read_space(path: str | Path) -> dict[str, Any]:
    """The search space in a JSON or YAML file: ``{field: [kind, ...]}``; numbers written as
    YAML 1.1 reads ``1e-5`` (a string) are taken as numbers."""
    space = read_mapping_file(path, what="space file", flag="--space")
    return {name: _numbers(spec) for name, spec in space.items()}


def _numbers(spec: Any) -> Any:
    """``spec`` with each numeric string after its kind (``"1e-5"``, also inside a choice's
    list) as a float; anything else as it is, for :func:`purejaxppo.search.check_space`."""
    def number(v: Any) -> Any:
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                return v
        return v

    if not isinstance(spec, list) or not spec:
        return spec
    return [spec[0], *(([number(x) for x in v] if isinstance(v, list) else number(v))
                       for v in spec[1:])]


def default_ready_every(config: PPOConfig) -> int:
    """Ten exploit intervals per run by default (at least one update each)."""
    return max(1, config.num_updates // 10)


class Searched(NamedTuple):
    """A finished search and how long it took (compile and run together)."""

    result: RandomSearchResult | PBTResult
    seconds: float


def run(config: PPOConfig, options: RunOptions, search: SearchSettings) -> Searched:
    """Runs the search: seeds ``options.seed + i`` per sample (random search), and the one key
    ``jax.random.key(options.seed)`` for the draws (and PBT's members and selections)."""
    t0 = time.perf_counter()
    key = jax.random.key(options.seed)
    if search.method == "random":
        seeds = jax.vmap(jax.random.key)(np.arange(options.seed, options.seed + options.num_seeds))
        result = random_search(config, search.space, search.population, seeds, key)
        # Label the seeds as the command line numbers them (train's metrics.csv does too).
        result = dataclasses.replace(result, seeds=list(range(options.seed,
                                                              options.seed + options.num_seeds)))
    else:
        result = pbt(config, search.space, search.population, search.ready_every, key,
                     fraction=search.fraction, resample_prob=search.resample_prob)
    jax.block_until_ready(result.result)
    return Searched(result, time.perf_counter() - t0)


def _run_metrics(result: RandomSearchResult | PBTResult) -> tuple[dict[str, np.ndarray], list,
                                                                    str | tuple[str, ...]]:
    """Metrics as ``{name: [runs, num_updates]}``, the id of each run and the id columns."""
    metrics = {k: np.asarray(v) for k, v in result.result.metrics.items()}
    if isinstance(result, PBTResult):
        return metrics, list(range(result.population)), "member"
    n, s = len(result.samples), len(result.seeds)
    flat = {k: v.reshape(n * s, v.shape[-1]) for k, v in metrics.items()}
    return flat, [(i, seed) for i in range(n) for seed in result.seeds], ("sample", "seed")


def _none(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def summarize(config: PPOConfig, options: RunOptions, preset: str | None,
              search: SearchSettings, searched: Searched) -> dict[str, Any]:
    """The contents of summary.json."""
    result = searched.result
    runs = result.final_returns().reshape(-1)
    finished = runs[~np.isnan(runs)]
    steps = config.num_updates * config.batch_size * runs.size
    if isinstance(result, PBTResult):
        best = result.best()
        best_info = {"member": best.member, "final_return": _none(best.final_return),
                     "final_values": result.values(len(result.starts) - 1, best.member),
                     "schedule": best.schedule}
        method = {"ready_every": search.ready_every, "intervals": len(result.starts),
                  "fraction": search.fraction, "resample_prob": search.resample_prob,
                  "exploits": int((result.parents != np.arange(result.population)).sum())}
    else:
        top = result.ranking()[0]
        best_info = {"sample": top, "final_return": _none(result.mean_returns()[top]),
                     "values": result.samples[top]}
        method = {"seeds_per_sample": len(result.seeds)}
    window = final_window(config.num_updates)
    return {
        "env": config.env,
        "preset": preset,
        "method": search.method,
        "population": search.population,
        **method,
        "space": {k: list(v) if isinstance(v, tuple) else v for k, v in search.space.items()},
        "search_seed": options.seed,
        "num_updates": config.num_updates,
        "env_steps_per_run": config.num_updates * config.batch_size,
        "total_env_steps": steps,
        "best": best_info,
        "final_return": {
            "best": best_info["final_return"],
            "population_mean": float(finished.mean()) if finished.size else None,
            "population_std": float(finished.std()) if finished.size else None,
            "definition": f"mean episode_return over the last {window} of {config.num_updates} "
                          f"updates (the last {FINAL_FRACTION:.0%}, at least one), per run; the "
                          "best is a PBT member's own, or a random sample's mean over its "
                          "seeds; population mean and std over every run in which an episode "
                          "finished",
        },
        "search_time_s": round(searched.seconds, 3),
        "env_steps_per_s": round(steps / searched.seconds) if searched.seconds > 0 else None,
        "versions": versions(),
        "device": device_description(runs.size),
    }


def best_lr_along_lineage(result: PBTResult) -> np.ndarray:
    """``[num_updates]``: the (annealed) learning rate each update of the best member's final
    parameters used, following its lineage back through the copies."""
    member = result.best().member
    lr = np.asarray(result.result.metrics["learning_rate"])
    ends = [*result.starts[1:], lr.shape[1]]
    return np.concatenate([lr[m, s:e] for m, s, e in zip(result.lineage(member), result.starts,
                                                         ends, strict=True)])


def write_outputs(run_dir: str | Path, config: PPOConfig, options: RunOptions,
                  preset: str | None, search: SearchSettings, searched: Searched
                  ) -> dict[str, Any]:
    """Writes metrics.csv, summary.json, returns.png, search.csv, and pbt.png (PBT) or
    best_config.json (random search); returns the summary."""
    run_dir = Path(run_dir)
    result = searched.result
    metrics, ids, label = _run_metrics(result)
    outputs.atomic_write(run_dir / outputs.METRICS_FILE,
                         outputs.metrics_csv(metrics, ids, label=label))
    summary = summarize(config, options, preset, search, searched)
    outputs.write_json(run_dir / outputs.SUMMARY_FILE, summary)
    what = "members" if search.method == "pbt" else "runs (samples x seeds)"
    outputs.plot_returns(run_dir / outputs.PLOT_FILE, metrics["env_steps"][0],
                         metrics["episode_return"],
                         f"{config.env}: {search.method} search, {len(ids)} {what}")
    outputs.atomic_write(run_dir / outputs.SEARCH_FILE, outputs.rows_csv(result.table()))
    if isinstance(result, PBTResult):
        best = result.best().member
        outputs.plot_pbt(run_dir / outputs.PBT_PLOT_FILE, metrics["env_steps"][0],
                         metrics["episode_return"], best, best_lr_along_lineage(result),
                         f"{config.env}: PBT, {result.population} members")
    else:
        outputs.write_json(run_dir / outputs.BEST_CONFIG_FILE,
                           settings_dict(result.best_config(), options, preset))
    return summary


def start_outputs(run_dir: Path, config: PPOConfig, options: RunOptions,
                  preset: str | None) -> None:
    """Writes config.json (the settings shared by every run) into the claimed run directory."""
    write_config(run_dir, config, options, preset)


def summary_table(summary: dict[str, Any], run_dir: str | Path) -> str:
    """The end-of-search table printed by ``purejaxppo search``."""
    best, final = summary["best"], summary["final_return"]
    who = (f"member {best['member']}" if summary["method"] == "pbt"
           else f"sample {best['sample']} (mean of {summary['seeds_per_sample']} seeds)")
    values = best.get("values") or best.get("final_values")
    best_text = ("no episode finished" if best["final_return"] is None
                 else f"{best['final_return']:.2f}")
    mean_text = ("no episode finished" if final["population_mean"] is None
                 else f"{final['population_mean']:.2f} ± {final['population_std']:.2f}")
    rows = [
        ("environment", summary["env"] + (f" (preset {summary['preset']})" if summary["preset"]
                                          else " (no preset)")),
        ("method", summary["method"] + (f", ready every {summary['ready_every']} updates, "
                                        f"{summary['exploits']} exploits"
                                        if summary["method"] == "pbt" else "")),
        ("population", f"{summary['population']} x {summary['num_updates']:,} updates = "
                       f"{summary['total_env_steps']:,} env steps"),
        ("best", f"{best_text}  ({who})"),
        ("best values", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in values.items())),
        ("population mean", mean_text),
        ("search time", f"{summary['search_time_s']:.1f} s (compile included)"),
        ("device", summary["device"]),
        ("outputs", f"{run_dir}/"),
    ]
    return outputs.format_table(rows)

"""Search benchmark: population-based training vs random search vs the preset, at equal env steps.

    python -m benchmarks.search                                  # Acrobot-v1 and Pendulum-v1
    python -m benchmarks.search --record                         # into benchmarks/results/
    python -m benchmarks.search --envs Acrobot-v1 --repetitions 2 --steps Acrobot-v1 100000

Each method trains 8 runs ("members") of the environment's preset (``purejaxppo/app/presets.json``)
for the same number of env steps each, so every method spends the same total:

* ``preset``: 8 seeds with the preset's hyperparameters;
* ``random``: :func:`purejaxppo.search.random_search`, 8 learning rates drawn log-uniformly from
  [1e-5, 1e-2], one seed each;
* ``pbt``: :func:`purejaxppo.search.pbt`, 8 members whose learning rates start from the same
  range, exploit/explore every tenth of the run.

Each method is repeated ``--repetitions`` times with independent keys. Reported per method: the
best member's final return and the population mean (``purejaxppo.metrics.final_return``),
mean ± std over repetitions. Writes ``search.{json,md,png}`` (``benchmarks/common.py``) after
each environment, keeping the rows of environments not rerun; the plot shows the first
repetition's PBT population of each environment and its best member's learning rate
(``search_curves.npz`` keeps them for the next run's plot).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import jax
import numpy as np

from benchmarks.common import (
    add_output_flags,
    device_info,
    nan_mean,
    new_figure,
    output_dir,
    preset_config,
    print_written,
    read_json,
    use_all_cores,
    whole_rollouts,
    write_json,
    write_text,
)
from purejaxppo.app.search import best_lr_along_lineage
from purejaxppo.metrics import final_return
from purejaxppo.search import pbt, random_search
from purejaxppo.sweeps import train_runs

NAME = "search"
BUDGETS = {"Acrobot-v1": 500_000, "Pendulum-v1": 1_000_000}
"""Env steps per member."""
SPACE = {"lr": ("log_uniform", 1e-5, 1e-2)}
METHODS = ("preset", "random", "pbt")


def run_method(method: str, config, members: int, key: jax.Array):
    """``(final returns [members], seconds, the PBT result or None)``."""
    t0 = time.perf_counter()
    result = None
    if method == "preset":
        keys = jax.random.split(key, members)
        hparams = jax.tree.map(lambda x: np.full(members, x), config.hyperparams())
        runs = train_runs(config, keys, hparams)
        returns = final_return(np.asarray(runs.metrics["episode_return"]))
    elif method == "random":
        k_draw, k_seed = jax.random.split(key)
        found = random_search(config, SPACE, members, seeds=jax.random.split(k_seed, 1),
                              key=k_draw)
        returns = found.final_returns()[:, 0]
    else:
        result = pbt(config, SPACE, members, max(1, config.num_updates // 10), key)
        returns = result.final_returns()
    return returns, time.perf_counter() - t0, result


def run_env(env: str, steps: int, members: int, repetitions: int) -> tuple[dict, dict]:
    config = whole_rollouts(preset_config(env), steps)
    rows, curves = [], {}
    for method in METHODS:
        best, mean, seconds = [], [], []
        for rep in range(repetitions):
            key = jax.random.fold_in(jax.random.key(rep), METHODS.index(method))
            returns, s, result = run_method(method, config, members, key)
            best.append(float(np.nanmax(returns)) if np.isfinite(returns).any() else np.nan)
            mean.append(float(nan_mean(returns)))
            seconds.append(s)
            if result is not None and rep == 0:
                curves = {"env_steps": np.asarray(result.result.metrics["env_steps"][0]),
                          "returns": np.asarray(result.result.metrics["episode_return"]),
                          "best": result.best().member, "lr": best_lr_along_lineage(result),
                          "exploits": int((result.parents != np.arange(members)).sum())}
            print(f"{env:12s} {method:7s} rep {rep}: best {best[-1]:9.1f}  mean {mean[-1]:9.1f}"
                  f"  ({s:.0f} s)", flush=True)
        rows.append({"env": env, "method": method, "members": members,
                     "repetitions": repetitions, "env_steps_per_member": config.total_timesteps,
                     "total_env_steps": config.total_timesteps * members,
                     "best_mean": float(nan_mean(best)), "best_std": float(np.nanstd(best)),
                     "population_mean": float(nan_mean(mean)),
                     "population_std": float(np.nanstd(mean)),
                     "best_per_rep": best, "mean_per_rep": mean,
                     "seconds_per_rep": float(np.mean(seconds))})
    return {"rows": rows, "config": config.to_dict()}, curves


def markdown(rows: list[dict]) -> str:
    lines = ["| env | method | members x env steps | best member's final return | population "
             "mean | s per repetition |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['env']} | {r['method']} | {r['members']} x "
                     f"{r['env_steps_per_member']:,} | {r['best_mean']:.1f} ± {r['best_std']:.1f} "
                     f"| {r['population_mean']:.1f} ± {r['population_std']:.1f} | "
                     f"{r['seconds_per_rep']:.0f} |")
    reps = rows[0]["repetitions"] if rows else 0
    lines.append(f"\nMean ± std over {reps} repetitions; final return: mean episode return over "
                 "the last 5% of updates.")
    return "\n".join(lines) + "\n"


def plot(path, curves: dict[str, dict]) -> None:
    fig = new_figure(6.4 * len(curves), 6.0)
    grid = fig.add_gridspec(2, len(curves), height_ratios=(2, 1))
    for j, (env, c) in enumerate(curves.items()):
        top = fig.add_subplot(grid[0, j])
        bottom = fig.add_subplot(grid[1, j], sharex=top)
        for i, ret in enumerate(c["returns"]):
            if i != c["best"]:
                top.plot(c["env_steps"], ret, color="0.6", lw=0.8, alpha=0.7)
        top.plot(c["env_steps"], c["returns"][c["best"]], color="C3", lw=1.6,
                 label=f"best member ({c['best']})")
        top.plot([], [], color="0.6", lw=0.8, label="other members")
        top.legend(loc="best", frameon=False)
        top.set(title=f"{env}: PBT, {len(c['returns'])} members, {c['exploits']} exploits",
                ylabel="episode return")
        bottom.plot(c["env_steps"], c["lr"], color="C3", lw=1.4)
        bottom.set(xlabel="environment steps (per member)", ylabel="lr of the best (lineage)",
                   yscale="log")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--repetitions", type=int, default=4)
    parser.add_argument("--steps", nargs=2, action="append", metavar=("ENV", "N"),
                        type=lambda x: int(x) if x.isdigit() else x,
                        help="env steps per member of ENV (repeatable; default: " + ", ".join(
                            f"{e} {s:,}" for e, s in BUDGETS.items()) + ")")
    add_output_flags(parser)
    args = parser.parse_args(argv)
    use_all_cores()
    # Repetitions differ only in their keys (arguments), so each method compiles once.
    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="search-bench-"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    out = output_dir(args)
    steps = dict(BUDGETS, **dict(args.steps or []))
    for env in args.envs:  # written after each environment; rows of others kept from the file
        result, curve = run_env(env, steps[env], args.members, args.repetitions)
        previous = read_json(out / f"{NAME}.json")
        rows = [r for r in previous.get("rows", []) if r["env"] != env] + result["rows"]
        configs = {**previous.get("configs", {}), env: result["config"]}
        path = write_json(out / f"{NAME}.json", {**device_info(), "space": SPACE, "rows": rows,
                                                 "configs": configs})
        curves = {**read_curves(out), env: curve}
        write_curves(out, curves)
    table = markdown(read_json(path)["rows"])
    print(table)
    png = out / f"{NAME}.png"
    plot(png, curves)
    print_written([path, write_text(out / f"{NAME}.md", table), png])
    return 0


def read_curves(out) -> dict[str, dict]:
    """The PBT curves of the environments written before (for the plot)."""
    path = out / f"{NAME}_curves.npz"
    if not path.exists():
        return {}
    data = np.load(path)
    envs = sorted({k.split("|")[0] for k in data.files})
    return {e: {k.split("|")[1]: (data[k].item() if data[k].ndim == 0 else data[k])
                for k in data.files if k.startswith(e + "|")} for e in envs}


def write_curves(out, curves: dict[str, dict]) -> None:
    np.savez(out / f"{NAME}_curves.npz",
             **{f"{e}|{k}": np.asarray(v) for e, c in curves.items() for k, v in c.items()})


if __name__ == "__main__":
    sys.exit(main())

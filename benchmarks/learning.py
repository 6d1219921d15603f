"""Learning benchmark: 16 vmapped seeds per environment, final return mean and std.

    python -m benchmarks.learning                                # every environment below
    python -m benchmarks.learning --record                       # the same, into benchmarks/results/
    python -m benchmarks.learning --envs CartPole-v1 --seeds 16

Each environment trains with its preset (``purejaxppo/app/presets.json``) at the budget below,
all seeds in one compiled program, split over one CPU device per core (``use_cpu_cores``) or over
the GPUs. The final return of a seed is ``purejaxppo.metrics.final_return``: its mean
``episode_return`` over the last 5% of updates. Prints the table and writes
``learning.{json,md}`` to a temporary directory, or to ``benchmarks/results/`` with ``--record``
(``benchmarks/common.py``); rows of environments not rerun are kept from the file there.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

from benchmarks.common import (
    add_output_flags,
    compile_and_time,
    finals,
    nan_mean,
    output_dir,
    preset_config,
    print_written,
    read_json,
    use_all_cores,
    whole_rollouts,
    write_json,
    write_text,
)
from purejaxppo import make_train
from purejaxppo.parallel import seed_sharding

NAME = "learning"

# env -> (total_timesteps, target mean final return or None, default seeds)
BUDGETS: dict[str, tuple[int, float | None, int]] = {
    "CartPole-v1": (500_000, 475.0, 16),
    "Acrobot-v1": (500_000, -100.0, 16),
    "Pendulum-v1": (1_000_000, -400.0, 16),
    "Breakout-MinAtar": (5_000_000, None, 4),
}


def run(env: str, seeds: int | None) -> dict:
    total, target, default_seeds = BUDGETS[env]
    seeds = seeds or default_seeds
    config = whole_rollouts(preset_config(env), total)
    keys = jax.random.split(jax.random.key(0), seeds)
    sharding = seed_sharding(seeds)
    if sharding is not None:  # jit partitions the vmap over the seed axis
        keys = jax.device_put(keys, sharding)
    result, compile_s, run_s = compile_and_time(jax.vmap(make_train(config)), keys)
    returns = np.asarray(result.metrics["episode_return"])  # [seeds, updates]
    final = finals(returns)
    row = {
        "env": env,
        "total_timesteps": config.total_timesteps,
        "seeds": seeds,
        "devices": 1 if sharding is None else sharding.mesh.size,
        "final_return_mean": final.mean,
        "final_return_std": final.std,
        "unfinished_seeds": final.unfinished,
        "last_update_return_mean": float(nan_mean(returns[:, -1])),
        "target": target,
        "passed": None if target is None else bool(final.mean >= target),
        "compile_s": round(compile_s, 2),
        "run_s": round(run_s, 2),
        "steps_per_s": round(seeds * config.num_updates * config.batch_size / run_s),
        "config": config.to_dict(),
    }
    print(f"{env:18s} {final.mean:9.1f} +- {final.std:6.1f}  (target {target}, {seeds} seeds, "
          f"{config.total_timesteps:,} steps, run {run_s:.0f}s)", flush=True)
    return row


def _number(value: float | None, fmt: str) -> str:
    return "nan" if value is None else format(value, fmt)


def markdown(rows: list[dict]) -> str:
    lines = ["| env | steps | seeds | final return (mean +- std) | target | passed | run s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        target = "report" if r["target"] is None else f">= {r['target']:g}"
        passed = "-" if r["passed"] is None else ("yes" if r["passed"] else "NO")
        lines.append(f"| {r['env']} | {r['total_timesteps']:,} | {r['seeds']} | "
                     f"{_number(r['final_return_mean'], '.1f')} +- "
                     f"{_number(r['final_return_std'], '.1f')} | {target} | "
                     f"{passed} | {r['run_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learning",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--seeds", type=int, default=None, help="override the seed count")
    add_output_flags(parser)
    args = parser.parse_args(argv)
    use_all_cores()  # before JAX runs anything: the seeds split over the cores
    rows = [run(env, args.seeds) for env in args.envs]
    out = output_dir(args)
    previous = read_json(out / f"{NAME}.json")
    merged = {**{r["env"]: r for r in previous.get("rows", [])}, **{r["env"]: r for r in rows}}
    payload = {"device": str(jax.devices()[0]), "jax": jax.__version__,
               "rows": list(merged.values())}
    path = write_json(out / f"{NAME}.json", payload)
    # The table from the file as written (NaN as null), so that both say the same.
    table = markdown(read_json(path)["rows"])
    print(table)
    print_written([path, write_text(out / f"{NAME}.md", table)])
    return 0 if all(r["passed"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

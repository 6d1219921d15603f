"""Learning benchmark: 16 vmapped seeds per environment, final return mean and std.

    python benchmarks/learning.py                      # every environment below
    python benchmarks/learning.py --envs CartPole-v1 --seeds 16

Each environment trains with its preset (``purejaxppo/presets.json``) at the budget below, all
seeds in one compiled program, split over one CPU device per core (``use_cpu_cores``) or over the
GPUs. The final return of a seed is its mean ``episode_return`` over the
last 5% of updates. Writes ``benchmarks/results/learning.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import numpy as np

from purejaxppo.parallel import seed_sharding, use_cpu_cores

use_cpu_cores()  # before JAX runs anything: the seeds split over the cores
from timing import compile_and_time  # noqa: E402

from purejaxppo import PPOConfig, make_train  # noqa: E402
from purejaxppo.outputs import final_returns  # noqa: E402
from purejaxppo.presets import get_preset  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

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
    base = PPOConfig(**{**get_preset(env).config, "env": env})
    # Whole rollouts only: round the budget down to a multiple of the batch.
    config = base.replace(total_timesteps=total // base.batch_size * base.batch_size)
    keys = jax.random.split(jax.random.key(0), seeds)
    sharding = seed_sharding(seeds)
    if sharding is not None:  # jit partitions the vmap over the seed axis
        keys = jax.device_put(keys, sharding)
    result, compile_s, run_s = compile_and_time(jax.vmap(make_train(config)), keys)
    returns = np.asarray(result.metrics["episode_return"])
    final = final_returns(returns)
    row = {
        "env": env,
        "total_timesteps": config.total_timesteps,
        "seeds": seeds,
        "devices": 1 if sharding is None else sharding.mesh.size,
        "final_return_mean": float(final.mean()),
        "final_return_std": float(final.std()),
        "last_update_return_mean": float(returns[:, -1].mean()),
        "target": target,
        "passed": None if target is None else bool(final.mean() >= target),
        "compile_s": round(compile_s, 2),
        "run_s": round(run_s, 2),
        "steps_per_s": round(seeds * config.num_updates * config.batch_size / run_s),
        "config": config.to_dict(),
    }
    print(f"{env:18s} {final.mean():9.1f} +- {final.std():6.1f}  (target {target}, {seeds} seeds, "
          f"{config.total_timesteps:,} steps, run {run_s:.0f}s)", flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| env | steps | seeds | final return (mean +- std) | target | passed | run s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        target = "report" if r["target"] is None else f">= {r['target']:g}"
        passed = "-" if r["passed"] is None else ("yes" if r["passed"] else "NO")
        lines.append(f"| {r['env']} | {r['total_timesteps']:,} | {r['seeds']} | "
                     f"{r['final_return_mean']:.1f} +- {r['final_return_std']:.1f} | {target} | "
                     f"{passed} | {r['run_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--seeds", type=int, default=None, help="override the seed count")
    args = parser.parse_args(argv)
    rows = [run(env, args.seeds) for env in args.envs]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "learning.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    merged = {**{r["env"]: r for r in previous.get("rows", [])}, **{r["env"]: r for r in rows}}
    payload = {"device": str(jax.devices()[0]), "jax": jax.__version__,
               "rows": list(merged.values())}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "learning.md").write_text(markdown(payload["rows"]))
    print(markdown(payload["rows"]))
    return 0 if all(r["passed"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

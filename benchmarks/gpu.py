"""GPU benchmark: 1, 256 and 2048 seeds of CartPole-v1 and of a MinAtar game, one program each.

    python benchmarks/gpu.py                 # on a machine with a GPU (jax[cuda12] installed)
    python benchmarks/gpu.py --quick         # smaller budgets; also runs on CPU as a smoke test

Reports compile time, run time, aggregate env steps/s and the device's peak memory, and writes
``benchmarks/results/gpu.{json,md}`` (``gpu_quick`` with ``--quick``). The figures recorded so far
are in ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
from timing import compile_and_time

from purejaxppo import PPOConfig, make_train
from purejaxppo.presets import get_preset

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

# (env, seeds, updates per seed, quick updates)
CASES = [
    ("CartPole-v1", 1, 976, 50), ("CartPole-v1", 256, 976, 20), ("CartPole-v1", 2048, 488, 10),
    ("Breakout-MinAtar", 1, 100, 5), ("Breakout-MinAtar", 256, 20, 2),
    ("Breakout-MinAtar", 2048, 5, 1),
]


def run(env: str, seeds: int, updates: int) -> dict:
    base = PPOConfig(**{**get_preset(env).config, "env": env})
    config = base.replace(total_timesteps=updates * base.batch_size)
    keys = jax.random.split(jax.random.key(0), seeds)
    result, compile_s, run_s = compile_and_time(jax.vmap(make_train(config)), keys)
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "env": env, "seeds": seeds, "num_envs": config.num_envs, "updates": config.num_updates,
        "compile_s": round(compile_s, 2), "run_s": round(run_s, 3),
        "steps_per_s": seeds * config.num_updates * config.batch_size / run_s,
        "peak_bytes": stats.get("peak_bytes_in_use"),
        "final_return_mean": float(result.metrics["episode_return"][:, -1].mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--max-seeds", type=int, default=None, help="skip cases with more seeds")
    args = parser.parse_args(argv)
    rows = []
    for env, seeds, updates, quick_updates in CASES:
        if args.max_seeds and seeds > args.max_seeds:
            continue
        row = run(env, seeds, quick_updates if args.quick else updates)
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [f"Device: {jax.devices()[0].device_kind} (jax {jax.__version__})", "",
             "| env | seeds | envs/seed | updates | compile s | run s | env steps/s | peak GB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**30:.2f}"
        lines.append(f"| {r['env']} | {r['seeds']} | {r['num_envs']} | {r['updates']} | "
                     f"{r['compile_s']:.1f} | {r['run_s']:.2f} | {r['steps_per_s'] / 1e6:.2f}M | "
                     f"{peak} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "gpu_quick" if args.quick else "gpu"
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "rows": rows}, indent=2))
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

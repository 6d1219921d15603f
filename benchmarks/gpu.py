"""GPU benchmark: 1, 256 and 2048 seeds of CartPole-v1 and of a MinAtar game, one program each.

    python -m benchmarks.gpu                  # on a machine with a GPU (jax[cuda12] installed)
    python -m benchmarks.gpu --record         # the same, written to benchmarks/results/gpu.*
    python -m benchmarks.gpu --quick          # smaller budgets
    python -m benchmarks.gpu --smoke          # every row at tiny sizes: ~30 s, also on a CPU

Reports compile time, run time, aggregate env steps/s, the device's peak memory and the mean final
return (``purejaxppo.metrics.final_return``), prints the table and writes ``gpu.{json,md}``
(``gpu_quick``/``gpu_smoke`` with ``--quick``/``--smoke``) to a temporary directory, or to
``benchmarks/results/`` with ``--record`` (``benchmarks/common.py``). The figures recorded so far
are in ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import NamedTuple

import jax

from benchmarks.common import (
    add_output_flags,
    compile_and_time,
    finals,
    output_dir,
    preset_config,
    print_written,
    write_json,
    write_text,
)
from purejaxppo import make_train


class Case(NamedTuple):
    """One row: ``seeds`` runs of ``env``'s preset in one program."""

    env: str
    seeds: int
    updates: int
    """Updates per seed (``--quick``: ``quick_updates``; ``--smoke``: :data:`SMOKE_UPDATES`)."""
    quick_updates: int
    smoke_seeds: int
    """Seeds with ``--smoke``."""


CASES = [
    Case("CartPole-v1", 1, 976, 50, 1), Case("CartPole-v1", 256, 976, 20, 2),
    Case("CartPole-v1", 2048, 488, 10, 4),
    Case("Breakout-MinAtar", 1, 100, 5, 1), Case("Breakout-MinAtar", 256, 20, 2, 2),
    Case("Breakout-MinAtar", 2048, 5, 1, 4),
]
SMOKE_UPDATES = 2
SMOKE_OVERRIDES = {"num_envs": 4, "num_steps": 32}
"""``--smoke``: every row at :data:`SMOKE_UPDATES` updates of these rollouts, ``smoke_seeds``
seeds (the time is then mostly compilation)."""


def run(env: str, seeds: int, updates: int, overrides: dict | None = None) -> dict:
    base = preset_config(env, **(overrides or {}))
    config = base.replace(total_timesteps=updates * base.batch_size)
    keys = jax.random.split(jax.random.key(0), seeds)
    result, compile_s, run_s = compile_and_time(jax.vmap(make_train(config)), keys)
    stats = jax.devices()[0].memory_stats() or {}
    final = finals(result.metrics["episode_return"])
    return {
        "env": env, "seeds": seeds, "num_envs": config.num_envs, "updates": config.num_updates,
        "compile_s": round(compile_s, 2), "run_s": round(run_s, 3),
        "steps_per_s": seeds * config.num_updates * config.batch_size / run_s,
        "peak_bytes": stats.get("peak_bytes_in_use"),
        "final_return_mean": final.mean, "unfinished_seeds": final.unfinished,
    }


def markdown(rows: list[dict]) -> str:
    lines = [f"Device: {jax.devices()[0].device_kind} (jax {jax.__version__})", "",
             "| env | seeds | envs/seed | updates | compile s | run s | env steps/s | peak GB | "
             "final return |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**30:.2f}"
        ret = r["final_return_mean"]
        ret = "-" if ret is None or math.isnan(ret) else f"{ret:.1f}"
        lines.append(f"| {r['env']} | {r['seeds']} | {r['num_envs']} | {r['updates']} | "
                     f"{r['compile_s']:.1f} | {r['run_s']:.2f} | {r['steps_per_s'] / 1e6:.2f}M | "
                     f"{peak} | {ret} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu",
                                     description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller budgets")
    size.add_argument("--smoke", action="store_true",
                      help=f"every row at {SMOKE_UPDATES} updates of 4 envs x 32 steps and 1-4 "
                           "seeds: a check that it runs (mostly compilation; ~30 s on a CPU)")
    parser.add_argument("--max-seeds", type=int, default=None, help="skip cases with more seeds")
    add_output_flags(parser)
    args = parser.parse_args(argv)
    rows = []
    for case in CASES:
        seeds = case.smoke_seeds if args.smoke else case.seeds
        if args.max_seeds and seeds > args.max_seeds:
            continue
        updates = (SMOKE_UPDATES if args.smoke else case.quick_updates if args.quick
                   else case.updates)
        row = run(case.env, seeds, updates, SMOKE_OVERRIDES if args.smoke else None)
        rows.append(row)
        print(row, flush=True)
    name = "gpu_smoke" if args.smoke else "gpu_quick" if args.quick else "gpu"
    out = output_dir(args)
    table = markdown(rows)
    print(table)
    payload = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "rows": rows}
    print_written([write_json(out / f"{name}.json", payload), write_text(out / f"{name}.md", table)])
    return 0


if __name__ == "__main__":
    sys.exit(main())

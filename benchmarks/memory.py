"""Peak memory of multi-seed training: grows with seeds, not with total_timesteps.

    python -m benchmarks.memory                  # 1, 16, 256 seeds x three budgets
    python -m benchmarks.memory --record         # the same, into benchmarks/results/
    python -m benchmarks.memory --seeds 1 16 --timesteps 8192 32768

Each setting runs in a fresh Python (the process's peak is not shared between settings). The
program is ``jax.jit(jax.vmap(make_train(config)))`` on CartPole-v1 (4 envs x 128 steps per seed).
It is compiled first; then the process's peak-RSS mark is reset (``/proc/self/clear_refs``) and
the program is run, so the reported peak is that of running, above the resident size just before
(the baseline: Python, jax, the compiled program, the inputs). Also reported: XLA's own buffer
plan (``compiled.memory_analysis()``: temporaries and outputs) and, where the backend keeps them
(GPU, TPU), the device's ``peak_bytes_in_use``. Prints the table and writes ``memory.{json,md}``
to a temporary directory, or to ``benchmarks/results/`` with ``--record`` (``benchmarks/common.py``).

Metrics are one scalar per update (``[seeds, num_updates]``), so the only part that grows with the
budget is that small array; everything else (rollout of one update, minibatches, state) is fixed
by ``num_envs x num_steps`` and the number of seeds.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import jax

from benchmarks.common import (
    add_output_flags,
    output_dir,
    print_written,
    run_module,
    write_json,
    write_text,
)
from purejaxppo import PPOConfig, make_train

MODULE = "benchmarks.memory"
"""This script as a module: each setting runs in ``python -m benchmarks.memory --child ...``."""
NAME = "memory"
MB = 2.0**20


def status_kb(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/self/status``, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def make_config(total_timesteps: int) -> PPOConfig:
    return PPOConfig(total_timesteps=total_timesteps, num_envs=4, num_steps=128)


def xla_plan(num_seeds: int, total_timesteps: int) -> dict:
    """XLA's buffer plan of the program (compiled, not run): temporaries and outputs in MB."""
    config = make_config(total_timesteps)
    keys = jax.random.split(jax.random.key(0), num_seeds)
    plan = jax.jit(jax.vmap(make_train(config))).lower(keys).compile().memory_analysis()
    return {"seeds": num_seeds, "total_timesteps": total_timesteps,
            "num_updates": config.num_updates,
            "xla_temp_mb": getattr(plan, "temp_size_in_bytes", 0) / MB,
            "xla_output_mb": getattr(plan, "output_size_in_bytes", 0) / MB}


def measure(num_seeds: int, total_timesteps: int) -> dict:
    """Compiles and runs one setting in this process; returns its memory figures."""
    config = make_config(total_timesteps)
    keys = jax.random.split(jax.random.key(0), num_seeds)
    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(make_train(config))).lower(keys).compile()
    compile_s = time.perf_counter() - start
    plan = compiled.memory_analysis()
    compile_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # Reset the peak-RSS mark (Linux >= 4.0), so that it measures the run alone.
    Path("/proc/self/clear_refs").write_text("5")
    baseline_kb = status_kb("VmRSS")
    start = time.perf_counter()
    result = jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - start
    peak_kb = status_kb("VmHWM")
    device_stats = jax.devices()[0].memory_stats() or {}
    metrics_bytes = sum(v.nbytes for v in result.metrics.values())
    return {
        "seeds": num_seeds,
        "total_timesteps": total_timesteps,
        "num_updates": config.num_updates,
        "env_steps": num_seeds * config.num_updates * config.batch_size,
        "run_peak_rss_above_baseline_mb": (peak_kb - baseline_kb) / 1024,
        "baseline_rss_mb": baseline_kb / 1024,
        "compile_peak_rss_mb": compile_peak_mb,
        "xla_temp_mb": getattr(plan, "temp_size_in_bytes", 0) / MB,
        "xla_output_mb": getattr(plan, "output_size_in_bytes", 0) / MB,
        "metrics_mb": metrics_bytes / MB,
        "device_peak_bytes_in_use_mb": (device_stats["peak_bytes_in_use"] / MB
                                        if "peak_bytes_in_use" in device_stats else None),
        "compile_s": compile_s,
        "run_s": run_s,
        "device": str(jax.devices()[0].device_kind),
    }


def run_child(num_seeds: int, total_timesteps: int, timeout_s: float) -> dict:
    """:func:`measure` in a fresh Python, so each setting has its own peak."""
    out = run_module(MODULE, ["--child", str(num_seeds), str(total_timesteps)], timeout_s,
                     check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict], plans: list[dict], host: str) -> str:
    lines = [
        "# Peak memory of multi-seed training (CartPole-v1, 4 envs x 128 steps per seed)",
        "",
        f"Host: {host}. Each row is a fresh process; `run peak` is the peak RSS while running the "
        "compiled program above the RSS just before it (Python, jax, the executable, inputs). "
        "`XLA temp`/`XLA out` are XLA's buffer plan for the program; `metrics` is the part "
        "of the output that grows with the budget.",
        "",
        "| seeds | total_timesteps | updates | run peak (MB) | XLA temp (MB) | XLA out (MB) "
        "| metrics (MB) | compile peak RSS (MB) | compile (s) | run (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seeds']} | {r['total_timesteps']} | {r['num_updates']} "
            f"| {r['run_peak_rss_above_baseline_mb']:.1f} | {r['xla_temp_mb']:.1f} "
            f"| {r['xla_output_mb']:.2f} | {r['metrics_mb']:.3f} | {r['compile_peak_rss_mb']:.0f} "
            f"| {r['compile_s']:.1f} | {r['run_s']:.1f} |")
    if plans:
        lines += [
            "",
            "XLA's buffer plan (compiled only) over more budgets. The temporaries take one of two "
            "sizes depending on the number of updates (XLA's buffer assignment), with no trend; "
            "only the metrics part of the output grows, by 4 bytes x metrics x seeds per update.",
            "",
            "| seeds | total_timesteps | updates | XLA temp (MB) | XLA out (MB) |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [f"| {p['seeds']} | {p['total_timesteps']} | {p['num_updates']} "
                  f"| {p['xla_temp_mb']:.1f} | {p['xla_output_mb']:.2f} |" for p in plans]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--timesteps", type=int, nargs="+", default=[8192, 32768, 65536],
                        help="total_timesteps per seed; compare two to see no growth")
    parser.add_argument("--plan-timesteps", type=int, nargs="*",
                        default=[8192, 16384, 32768, 65536, 131072],
                        help="budgets for XLA's buffer plan (compiled, not run) of the most seeds")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per setting")
    parser.add_argument("--child", type=int, nargs=2, metavar=("SEEDS", "TIMESTEPS"),
                        help=argparse.SUPPRESS)
    add_output_flags(parser)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*args.child)))
        return 0

    rows = []
    for seeds in args.seeds:
        for timesteps in args.timesteps:
            row = run_child(seeds, timesteps, args.timeout)
            print(f"seeds={seeds:4d} timesteps={timesteps:7d}: run peak "
                  f"{row['run_peak_rss_above_baseline_mb']:7.1f} MB, XLA temp "
                  f"{row['xla_temp_mb']:7.1f} MB, out {row['xla_output_mb']:6.2f} MB "
                  f"({row['run_s']:.1f} s)", flush=True)
            rows.append(row)
    plans = []
    for timesteps in args.plan_timesteps:
        plans.append(xla_plan(max(args.seeds), timesteps))
        print(f"plan seeds={max(args.seeds)} timesteps={timesteps}: XLA temp "
              f"{plans[-1]['xla_temp_mb']:.1f} MB, out {plans[-1]['xla_output_mb']:.2f} MB",
              flush=True)
    host = f"{platform.machine()}, {rows[0]['device']}" if rows else platform.machine()
    out = output_dir(args)
    table = markdown(rows, plans, host)
    print(table)
    print_written([write_json(out / f"{NAME}.json", {"host": host, "rows": rows, "plans": plans}),
                   write_text(out / f"{NAME}.md", table)])
    return 0


if __name__ == "__main__":
    sys.exit(main())

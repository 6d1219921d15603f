"""GPU benchmark: what a GPU user wants to know, one compiled program per row, in < 8 minutes.

    python -m benchmarks.gpu                  # on a machine with a GPU (jax[cuda12] installed)
    python -m benchmarks.gpu --record         # the same, written to benchmarks/results/gpu.*
    python -m benchmarks.gpu --quick          # smaller budgets
    python -m benchmarks.gpu --smoke          # every row at tiny sizes: a check that it runs, on a CPU

Rows: CartPole-v1 with 1, 256 and 2048 seeds; Breakout-MinAtar's preset (the CNN) with 1 and 64
seeds; one Brax environment (``brax:halfcheetah``) with 2048 environments, when the Brax extra is
installed and ``purejaxppo.envs.make("brax:halfcheetah")`` succeeds (``--smoke`` runs that row on
``brax:inverted_pendulum``: the same code path, compiled in a fraction of the time); the GRU policy
(CartPole-v1, 256 seeds), when a network named ``"gru"`` is registered. A row whose requirement is
missing is skipped with its reason, printed and recorded. The budgets (about 7e8 env steps in all,
5e8 of them the 2048 CartPole seeds) are meant to fit in 8 minutes on one modern GPU, compile times
included (not yet measured on one: ``benchmarks/NOTES.md`` has the figures recorded so far).

Reports compile time, run time, aggregate env steps/s, the device's peak memory and the mean final
return (``purejaxppo.metrics.final_return``), prints the table and writes ``gpu.{json,md}``
(``gpu_quick``/``gpu_smoke`` with ``--quick``/``--smoke``) to a temporary directory, or to
``benchmarks/results/`` with ``--record`` (``benchmarks/common.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from collections.abc import Callable
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
from purejaxppo import PPOConfig, make_train

BRAX_ENV = "brax:halfcheetah"
BRAX_SMOKE_ENV = "brax:inverted_pendulum"
"""The Brax row's env with ``--smoke``: the same code path at a fraction of the compile time."""
BRAX_CONFIG = dict(num_envs=2048, num_steps=32, update_epochs=4, num_minibatches=32,
                   hidden_sizes=(256, 256), activation="relu", lr=3e-4, gamma=0.99,
                   normalize_obs=True, normalize_reward=True, anneal_lr=False)
"""Brax's own PPO settings for its locomotion tasks, in outline: 2048 environments, short
rollouts, large minibatches, normalised observations."""


def brax_missing() -> str | None:
    """Why the Brax row cannot run here, or None."""
    if importlib.util.find_spec("brax") is None:
        return "brax is not installed (pip install brax, or the purejaxppo Brax extra)"
    from purejaxppo import envs

    try:
        envs.make(BRAX_ENV)
    except Exception as e:  # an unknown id, a missing dependency of brax, a failing build
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"purejaxppo.envs.make({BRAX_ENV!r}) failed: {first}"
    return None


def gru_missing() -> str | None:
    """Why the GRU row cannot run here, or None."""
    from purejaxppo.networks import registered_networks

    if "gru" not in registered_networks():
        return "no network named 'gru' is registered (purejaxppo.networks.registered_networks())"
    return None


def brax_config(**overrides: object) -> PPOConfig:
    return PPOConfig(**{"env": BRAX_ENV, **BRAX_CONFIG, **overrides})


def gru_config(**overrides: object) -> PPOConfig:
    return preset_config("CartPole-v1", network="gru", **overrides)


class Case(NamedTuple):
    """One row: ``seeds`` runs of ``env`` in one program."""

    label: str
    env: str
    seeds: int
    updates: int
    """Updates per seed (``--quick``: ``quick_updates``; ``--smoke``: :data:`SMOKE_UPDATES`)."""
    quick_updates: int
    smoke_seeds: int
    """Seeds with ``--smoke``."""
    config: Callable[..., PPOConfig] | None = None
    """Builds the config from overrides; None: ``env``'s preset."""
    missing: Callable[[], str | None] | None = None
    """Why the row cannot run here (None: it can)."""
    smoke_env: str | None = None
    """The env that runs in its place with ``--smoke`` (None: ``env``)."""


CASES = [
    Case("CartPole-v1", "CartPole-v1", 1, 976, 50, 1),
    Case("CartPole-v1", "CartPole-v1", 256, 976, 20, 2),
    Case("CartPole-v1", "CartPole-v1", 2048, 488, 10, 4),
    Case("Breakout-MinAtar", "Breakout-MinAtar", 1, 100, 5, 1),
    Case("Breakout-MinAtar", "Breakout-MinAtar", 64, 40, 2, 2),
    Case(f"{BRAX_ENV} (2048 envs)", BRAX_ENV, 1, 50, 5, 1, brax_config, brax_missing,
         BRAX_SMOKE_ENV),
    Case("CartPole-v1, GRU policy", "CartPole-v1", 256, 488, 10, 2, gru_config, gru_missing),
]
SMOKE_UPDATES = 2
SMOKE_OVERRIDES = {"num_envs": 4, "num_steps": 32, "num_minibatches": 2}
"""``--smoke``: every row at :data:`SMOKE_UPDATES` updates of these rollouts, ``smoke_seeds``
seeds (the time is then mostly compilation)."""


def run(case: Case, seeds: int, updates: int, overrides: dict | None = None) -> dict:
    """One row: ``seeds`` runs of ``case``'s config for ``updates`` updates, compiled and timed."""
    build = case.config or (lambda **o: preset_config(case.env, **o))
    base = build(**(overrides or {}))
    config = base.replace(total_timesteps=updates * base.batch_size)
    keys = jax.random.split(jax.random.key(0), seeds)
    result, compile_s, run_s = compile_and_time(jax.vmap(make_train(config)), keys)
    stats = jax.devices()[0].memory_stats() or {}
    final = finals(result.metrics["episode_return"])
    return {
        "row": case.label, "env": config.env, "network": config.network, "seeds": seeds,
        "num_envs": config.num_envs, "updates": config.num_updates,
        "compile_s": round(compile_s, 2), "run_s": round(run_s, 3),
        "steps_per_s": seeds * config.num_updates * config.batch_size / run_s,
        "peak_bytes": stats.get("peak_bytes_in_use"),
        "final_return_mean": final.mean, "unfinished_seeds": final.unfinished,
    }


def markdown(rows: list[dict], skipped: list[dict], total_s: float) -> str:
    lines = [f"Device: {jax.devices()[0].device_kind} (jax {jax.__version__}); all rows in "
             f"{total_s:.0f} s", "",
             "| row | seeds | envs/seed | updates | compile s | run s | env steps/s | peak GB | "
             "final return |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**30:.2f}"
        ret = r["final_return_mean"]
        ret = "-" if ret is None or math.isnan(ret) else f"{ret:.1f}"
        label = r["row"] + (f" (this run: {r['ran_as']})" if r.get("ran_as") else "")
        lines.append(f"| {label} | {r['seeds']} | {r['num_envs']} | {r['updates']} | "
                     f"{r['compile_s']:.1f} | {r['run_s']:.2f} | {r['steps_per_s'] / 1e6:.2f}M | "
                     f"{peak} | {ret} |")
    if skipped:
        lines.append("")
        lines += [f"Skipped {s['row']}: {s['reason']}." for s in skipped]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu",
                                     description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller budgets")
    size.add_argument("--smoke", action="store_true",
                      help=f"every row at {SMOKE_UPDATES} updates of 4 envs x 32 steps and 1-4 "
                           "seeds: a check that it runs (mostly compilation), also on a CPU")
    parser.add_argument("--max-seeds", type=int, default=None, help="skip cases with more seeds")
    add_output_flags(parser)
    args = parser.parse_args(argv)
    if jax.default_backend() == "cpu":
        print("note: no GPU here; these are CPU figures", flush=True)
    rows, skipped = [], []
    start = time.perf_counter()
    for case in CASES:
        seeds = case.smoke_seeds if args.smoke else case.seeds
        if args.max_seeds and seeds > args.max_seeds:
            continue
        reason = case.missing() if case.missing is not None else None
        if reason is not None:
            skipped.append({"row": case.label, "reason": reason})
            print(f"skipped {case.label}: {reason}", flush=True)
            continue
        updates = (SMOKE_UPDATES if args.smoke else case.quick_updates if args.quick
                   else case.updates)
        overrides = None
        if args.smoke:
            overrides = dict(SMOKE_OVERRIDES)
            if case.smoke_env:
                overrides["env"] = case.smoke_env
        row = run(case, seeds, updates, overrides)
        if overrides and "env" in overrides:
            row["ran_as"] = overrides["env"]  # the label's env is not the one that ran
        rows.append(row)
        print(row, flush=True)
    total_s = time.perf_counter() - start
    name = "gpu_smoke" if args.smoke else "gpu_quick" if args.quick else "gpu"
    out = output_dir(args)
    table = markdown(rows, skipped, total_s)
    print(table)
    payload = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
               "total_s": round(total_s, 1), "rows": rows, "skipped": skipped}
    print_written([write_json(out / f"{name}.json", payload), write_text(out / f"{name}.md", table)])
    return 0


if __name__ == "__main__":
    sys.exit(main())

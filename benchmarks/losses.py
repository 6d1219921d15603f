"""Every policy loss, and TRPO, on a few environments: final return over vmapped seeds.

    python benchmarks/losses.py --envs CartPole-v1                # all losses + TRPO, 16 seeds
    python benchmarks/losses.py --envs Breakout-MinAtar --seeds 2 --timesteps-scale 0.2
    python benchmarks/losses.py --envs Acrobot-v1 --rules trpo ppo_clip

Each (environment, rule) trains the environment's preset (``purejaxppo/presets.json``) with that
policy loss, or with ``update_rule="trpo"`` (plus the TRPO settings below), at a fixed budget;
all seeds run as one compiled program (``jax.vmap`` over keys). The final return of a seed is its
mean ``episode_return`` over the last 5% of updates, as in ``benchmarks/learning.py``. Results
accumulate in ``benchmarks/results/losses.{json,md,png}`` (a rerun replaces its own rows).

Each run is a subprocess under a watchdog: jaxlib 0.10.2's CPU runtime occasionally hangs in
execution with every thread idle (seen here and in benchmarks/NOTES.md), so a run whose CPU time
stops advancing for ``--stall-s`` seconds is killed and started again (same seeds, same result).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from purejaxppo import POLICY_LOSSES, PPOConfig, make_train  # noqa: E402
from purejaxppo.outputs import final_returns  # noqa: E402
from purejaxppo.presets import get_preset  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
NAME = "losses"

# env -> (total_timesteps, seeds): the budgets of benchmarks/learning.py.
BUDGETS: dict[str, tuple[int, int]] = {
    "CartPole-v1": (500_000, 16),
    "Acrobot-v1": (500_000, 16),
    "Pendulum-v1": (1_000_000, 16),
    "Breakout-MinAtar": (5_000_000, 4),
}

# TRPO's changes to the preset. One trust-region step per rollout wants a larger rollout than
# PPO's minibatch epochs, a longer GAE horizon and a faster critic: TRPO is usually run on 1k-5k
# samples per step with lambda 0.97-0.98 and a critic lr of ~1e-3 (OpenAI Baselines: 1024
# samples, lambda 0.98; Spinning Up: 4000 samples, lambda 0.97, critic lr 1e-3). Measured on
# CartPole (return of the last update): the PPO preset as is (4 x 128, lambda 0.95, lr 2.5e-4)
# 383 +- 156 over 16 seeds; 16 x 128 with lambda 0.95 / 0.98 / 0.99 at lr 2.5e-4: 346 / 455 / 443,
# at lr 1e-3 with lambda 0.98 / 0.99: 488 / 469 (6 seeds each); max_kl 0.02 was worse.
TRPO_SETTINGS: dict[str, dict] = {
    "CartPole-v1": {"num_envs": 16, "gae_lambda": 0.98, "lr": 1e-3},
    "Acrobot-v1": {},
    "Pendulum-v1": {},
    "Breakout-MinAtar": {},
}

RULES = (*POLICY_LOSSES, "trpo")


def make_config(env: str, rule: str, total_timesteps: int) -> PPOConfig:
    """The preset of ``env`` with ``rule`` (a policy loss, or 'trpo') at ``total_timesteps``."""
    base = {**get_preset(env).config, "env": env}
    if rule == "trpo":
        base.update(update_rule="trpo", **TRPO_SETTINGS[env])
    else:
        base.update(policy_loss=rule)
    config = PPOConfig(**base)
    # Whole rollouts only: round the budget down to a multiple of the batch.
    steps = max(total_timesteps // config.batch_size, 1) * config.batch_size
    return config.replace(total_timesteps=steps)


def run(env: str, rule: str, seeds: int, total_timesteps: int) -> dict:
    config = make_config(env, rule, total_timesteps)
    keys = jax.random.split(jax.random.key(0), seeds)
    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(make_train(config))).lower(keys).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    result = jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - start
    returns = np.asarray(result.metrics["episode_return"])
    final = final_returns(returns)
    row = {
        "env": env,
        "rule": rule,
        "total_timesteps": config.total_timesteps,
        "seeds": seeds,
        "final_return_mean": float(final.mean()),
        "final_return_std": float(final.std()),
        "final_return_per_seed": final.round(2).tolist(),
        "last_update_return_mean": float(returns[:, -1].mean()),
        "nonfinite_seeds": int(np.any(np.asarray(result.metrics.get("nonfinite", 0)), axis=-1)
                               .sum()),
        "compile_s": round(compile_s, 1),
        "run_s": round(run_s, 1),
        "env_steps": np.asarray(result.metrics["env_steps"][0]).tolist(),
        "curve_mean": returns.mean(axis=0).round(2).tolist(),
        "config": config.to_dict(),
    }
    if rule == "trpo":
        steps = np.asarray(result.metrics["trpo_line_search_steps"])
        row["trpo_rejected_fraction"] = float((steps == config.line_search_steps).mean())
        row["trpo_kl_max"] = float(np.asarray(result.metrics["trpo_kl"]).max())
    print(f"{env:18s} {rule:17s} {final.mean():9.1f} +- {final.std():6.1f}  ({seeds} seeds, "
          f"{config.total_timesteps:,} steps, compile {compile_s:.0f}s, run {run_s:.0f}s)",
          flush=True)
    return row


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from ``/proc`` (Linux)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_watched(env: str, rule: str, seeds: int, total_timesteps: int, stall_s: float,
                attempts: int = 3) -> dict:
    """:func:`run` in a subprocess, restarted when its CPU time stalls for ``stall_s``."""
    for attempt in range(1, attempts + 1):
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp) / "row.json"
            proc = subprocess.Popen([sys.executable, __file__, "--worker", env, rule, str(seeds),
                                     str(total_timesteps), str(out)])
            cpu, changed = -1.0, time.monotonic()
            while proc.poll() is None:
                time.sleep(2.0)
                try:
                    now = cpu_seconds(proc.pid)
                except (OSError, IndexError, ValueError):
                    continue  # exited meanwhile, or no /proc: no watchdog
                if now != cpu:
                    cpu, changed = now, time.monotonic()
                elif time.monotonic() - changed > stall_s:
                    proc.kill()
                    proc.wait()
                    print(f"{env} {rule}: no progress for {stall_s:.0f}s (XLA hang), restarting "
                          f"(attempt {attempt} of {attempts})", flush=True)
            if proc.returncode == 0 and out.exists():
                return json.loads(out.read_text())
            if proc.returncode not in (0, -9):
                raise RuntimeError(f"{env} {rule}: the run failed (exit code {proc.returncode})")
    raise RuntimeError(f"{env} {rule}: hung {attempts} times")


def label(row: dict) -> str:
    """The rule, with TRPO's changes to the preset spelled out."""
    if row["rule"] != "trpo":
        return row["rule"]
    changes = TRPO_SETTINGS.get(row["env"], {})
    extra = ", ".join(f"{k}={v}" for k, v in changes.items())
    return f"trpo (max_kl={row['config']['max_kl']:g}{', ' + extra if extra else ''})"


def markdown(rows: list[dict]) -> str:
    lines = ["Final return: mean +- std over seeds of each seed's mean episode return in the last "
             "5% of updates. Each environment uses its preset (purejaxppo/presets.json); budgets "
             "below the standard ones (benchmarks/learning.py) are marked.", "",
             "| env | rule | steps | seeds | final return (mean +- std) | run s |",
             "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (list(BUDGETS).index(r["env"]), RULES.index(r["rule"]))):
        standard, default_seeds = BUDGETS[r["env"]]
        steps = f"{r['total_timesteps']:,}"
        if r["total_timesteps"] < 0.99 * standard:
            steps += f" (reduced from {standard:,})"
        seeds = f"{r['seeds']}" + (" (reduced)" if r["seeds"] < default_seeds else "")
        lines.append(f"| {r['env']} | {label(r)} | {steps} | {seeds} | "
                     f"{r['final_return_mean']:.1f} +- {r['final_return_std']:.1f} | "
                     f"{r['run_s']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(path: pathlib.Path, rows: list[dict]) -> None:
    envs = [e for e in BUDGETS if any(r["env"] == e for r in rows)]
    fig, axes = plt.subplots(1, len(envs), figsize=(5.2 * len(envs), 4.2), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for r in sorted((r for r in rows if r["env"] == env), key=lambda r: RULES.index(r["rule"])):
            style = dict(lw=2.2, color="k") if r["rule"] == "trpo" else dict(lw=1.3)
            ax.plot(r["env_steps"], r["curve_mean"], label=label(r), **style)
        ax.set_title(env, fontsize=10)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("episode return (mean over seeds)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1"], choices=list(BUDGETS))
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES),
                        help="policy losses, and 'trpo'")
    parser.add_argument("--seeds", type=int, default=None, help="override the seed count")
    parser.add_argument("--timesteps-scale", type=float, default=1.0,
                        help="multiply every budget (e.g. 0.2 for a quick look)")
    parser.add_argument("--stall-s", type=float, default=120.0,
                        help="restart a run whose CPU time has not advanced for this long")
    parser.add_argument("--worker", nargs=5, metavar=("ENV", "RULE", "SEEDS", "STEPS", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # one run, in the subprocess started by run_watched
        env, rule, seeds, steps, path = args.worker
        row = run(env, rule, int(seeds), int(steps))
        pathlib.Path(path).write_text(json.dumps(row))
        return 0

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{NAME}.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    merged = {(r["env"], r["rule"]): r for r in previous.get("rows", [])}
    for env in args.envs:
        budget, default_seeds = BUDGETS[env]
        for rule in args.rules:
            row = run_watched(env, rule, args.seeds or default_seeds,
                              int(budget * args.timesteps_scale), args.stall_s)
            merged[(env, rule)] = row
            # Write after every run: a long benchmark keeps what it has if interrupted.
            payload = {"device": str(jax.devices()[0]), "jax": jax.__version__,
                       "rows": list(merged.values())}
            out.write_text(json.dumps(payload, indent=1) + "\n")
            (RESULTS / f"{NAME}.md").write_text(markdown(payload["rows"]))
            plot(RESULTS / f"{NAME}.png", payload["rows"])
    print(markdown(list(merged.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

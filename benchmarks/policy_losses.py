"""Every policy loss, and TRPO, on a few environments: final return over vmapped seeds.

    python -m benchmarks.policy_losses --envs CartPole-v1        # all losses + TRPO, 16 seeds
    python -m benchmarks.policy_losses --envs CartPole-v1 --record   # into benchmarks/results/
    python -m benchmarks.policy_losses --envs Breakout-MinAtar --seeds 2 --timesteps-scale 0.2
    python -m benchmarks.policy_losses --envs Acrobot-v1 --rules trpo ppo_clip

Each environment trains its preset (``purejaxppo/app/presets.json``) at a fixed budget. The
policy losses are one :func:`purejaxppo.sweeps.sweep` over ``policy_loss`` (every loss x seed in
one compiled program, the loss picked by a traced index); TRPO (``update_rule="trpo"``, plus the
settings below) is a second program. The final return of a seed is
``purejaxppo.metrics.final_return`` (its mean ``episode_return`` over the last 5% of updates), as
in ``benchmarks/learning.py``. Prints the table; results accumulate in ``losses.{json,md,png}``
(a rerun replaces its own rows) in a temporary directory, or in ``benchmarks/results/`` with
``--record`` (``benchmarks/common.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import (
    add_output_flags,
    finals,
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
from purejaxppo import POLICY_LOSSES, PPOConfig, sweep

NAME = "losses"
"""Output files ``losses.{json,md,png}`` (the name the recorded tables have always had)."""

# env -> (total_timesteps, seeds): the budgets the recorded losses table was measured at (Acrobot
# and Breakout below their presets' own budgets, which benchmarks/learning.py uses).
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
# CartPole: the PPO preset as is (4 x 128, lambda 0.95, lr 2.5e-4) 383 +- 156 over 16 seeds
# (return of the last update); with 16 x 128, one sweep of 16 seeds per point (final return):
#   critic lr 1e-3: lambda 0.97 / 0.98 / 0.99 -> 490.3 +- 13.2 / 479.1 +- 28.8 / 488.7 +- 22.2
#   critic lr 3e-3: lambda 0.97 / 0.98 / 0.99 -> 500.0 +- 0.0 / 499.5 +- 1.9 / 498.3 +- 6.5
# (max_kl 0.02 was worse than 0.01 in an earlier 6-seed look).
TRPO_SETTINGS: dict[str, dict] = {
    "CartPole-v1": {"num_envs": 16, "gae_lambda": 0.97, "lr": 3e-3},
    "Acrobot-v1": {},
    "Pendulum-v1": {},
    "Breakout-MinAtar": {},
}

NETWORKS: dict[str, str] = {"Breakout-MinAtar": "mlp"}
"""Networks other than the preset's: the recorded table's Breakout rows used the 2x256 MLP (the
preset now uses the CNN, ~3.5x the time per step on a CPU)."""

RULES = (*POLICY_LOSSES, "trpo")


def make_config(env: str, rule: str, total_timesteps: int) -> PPOConfig:
    """The preset of ``env`` with ``rule`` (a policy loss, or 'trpo') at ``total_timesteps``
    (rounded down to whole rollouts)."""
    changes = ({"update_rule": "trpo", **TRPO_SETTINGS[env]} if rule == "trpo"
               else {"policy_loss": rule})
    if env in NETWORKS:
        changes["network"] = NETWORKS[env]
    return whole_rollouts(preset_config(env, **changes), total_timesteps)


def run(env: str, rules: list[str], seeds: int, total_timesteps: int) -> list[dict]:
    """One compiled program: a sweep over the policy losses in ``rules``, or TRPO alone."""
    config = make_config(env, rules[0], total_timesteps)
    grid = None if rules == ["trpo"] else {"policy_loss": rules}
    start = time.perf_counter()
    result = sweep(config, seeds, grid)
    metrics = jax.tree.map(np.asarray, result.result.metrics)
    seconds = time.perf_counter() - start
    rows = []
    for i, rule in enumerate(rules):
        m = metrics if grid is None else jax.tree.map(lambda x, i=i: x[i], metrics)
        returns = m["episode_return"]  # [seeds, updates], NaN until a seed's first episode ends
        final = finals(returns)
        row = {
            "env": env,
            "rule": rule,
            "total_timesteps": config.total_timesteps,
            "seeds": seeds,
            "final_return_mean": final.mean,
            "final_return_std": final.std,
            "final_return_per_seed": final.per_run.round(2).tolist(),
            "unfinished_seeds": final.unfinished,
            "last_update_return_mean": float(nan_mean(returns[:, -1])),
            "nonfinite_seeds": int(np.any(m["nonfinite"], axis=-1).sum()),
            "program": f"{len(rules)} x {seeds} runs",
            "program_s": round(seconds, 1),
            "env_steps": m["env_steps"][0].tolist(),
            "curve_mean": nan_mean(returns, axis=0).round(2).tolist(),
            "config": config.replace(policy_loss=rule).to_dict() if grid else config.to_dict(),
        }
        if rule == "trpo":
            steps = m["trpo_line_search_steps"]
            row["trpo_rejected_fraction"] = float((steps == config.line_search_steps).mean())
            row["trpo_kl_max"] = float(m["trpo_kl"].max())
        print(f"{env:18s} {rule:17s} {final.mean:9.1f} +- {final.std:6.1f}  ({seeds} seeds, "
              f"{config.total_timesteps:,} steps)", flush=True)
        rows.append(row)
    print(f"  ({len(rules)} x {seeds} runs in one program: {seconds:.0f} s with compilation)",
          flush=True)
    return rows


def label(row: dict) -> str:
    """The rule, with TRPO's changes to the preset spelled out."""
    if row["rule"] != "trpo":
        return row["rule"]
    changes = TRPO_SETTINGS.get(row["env"], {})
    extra = ", ".join(f"{k}={v}" for k, v in changes.items())
    return f"trpo (max_kl={row['config']['max_kl']:g}{', ' + extra if extra else ''})"


def _number(value: float | None) -> str:
    """One decimal; "nan" for a missing value (no seed finished an episode)."""
    return "nan" if value is None else f"{value:.1f}"


def markdown(rows: list[dict]) -> str:
    lines = ["Final return: mean +- std over seeds of each seed's mean episode return in the last "
             "5% of updates. Each environment uses its preset (purejaxppo/app/presets.json); budgets "
             "below the standard ones (benchmarks/learning.py) are marked. The policy losses of "
             "an environment are one compiled program (a sweep over policy_loss); TRPO is another.",
             "", "| env | rule | steps | seeds | final return (mean +- std) | program (s) |",
             "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (list(BUDGETS).index(r["env"]), RULES.index(r["rule"]))):
        standard, default_seeds = BUDGETS[r["env"]]
        steps = f"{r['total_timesteps']:,}"
        if r["total_timesteps"] < 0.99 * standard:
            steps += f" (reduced from {standard:,})"
        seeds = f"{r['seeds']}" + (" (reduced)" if r["seeds"] < default_seeds else "")
        lines.append(f"| {r['env']} | {label(r)} | {steps} | {seeds} | "
                     f"{_number(r['final_return_mean'])} +- {_number(r['final_return_std'])} | "
                     f"{r['program']}: {r['program_s']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, rows: list[dict]) -> Path:
    """One panel per environment: each rule's mean return over seeds against env steps."""
    envs = [e for e in BUDGETS if any(r["env"] == e for r in rows)]
    fig = new_figure(5.2 * len(envs), 4.2)
    axes = fig.subplots(1, len(envs), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for r in sorted((r for r in rows if r["env"] == env), key=lambda r: RULES.index(r["rule"])):
            style = dict(lw=2.2, color="k") if r["rule"] == "trpo" else dict(lw=1.3)
            # null in the JSON (no episode finished yet in any seed) is a gap in the curve.
            curve = np.asarray([np.nan if v is None else v for v in r["curve_mean"]], float)
            ax.plot(r["env_steps"], curve, label=label(r), **style)
        ax.set_title(env, fontsize=10)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("episode return (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.policy_losses",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1"], choices=list(BUDGETS))
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES),
                        help="policy losses, and 'trpo'")
    parser.add_argument("--seeds", type=int, default=None, help="override the seed count")
    parser.add_argument("--timesteps-scale", type=float, default=1.0,
                        help="multiply every budget (e.g. 0.2 for a quick look)")
    add_output_flags(parser)
    args = parser.parse_args(argv)
    use_all_cores()  # before JAX runs anything: the sweep's runs split over the cores

    out = output_dir(args)
    paths = [out / f"{NAME}.json", out / f"{NAME}.md", out / f"{NAME}.png"]
    losses = [r for r in args.rules if r != "trpo"]
    groups = [g for g in (losses, ["trpo"] if "trpo" in args.rules else []) if g]
    for env in args.envs:
        budget, default_seeds = BUDGETS[env]
        for group in groups:
            rows = run(env, group, args.seeds or default_seeds, int(budget * args.timesteps_scale))
            # Merge into the file as it is now (another run may have written meanwhile), after
            # every program: a long benchmark keeps what it has if interrupted.
            previous = read_json(paths[0])
            merged = {(r["env"], r["rule"]): r for r in previous.get("rows", [])}
            merged.update({(r["env"], r["rule"]): r for r in rows})
            payload = {"device": str(jax.devices()[0]), "jax": jax.__version__,
                       "rows": list(merged.values())}
            write_json(paths[0], payload, indent=1)
            recorded = read_json(paths[0])["rows"]  # as written: NaN as null
            write_text(paths[1], markdown(recorded))
            plot(paths[2], recorded)
    if paths[0].exists():
        print(markdown(read_json(paths[0])["rows"]))
        print_written(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every policy loss, and TRPO, on a few environments: final return over vmapped seeds.

    python benchmarks/losses.py --envs CartPole-v1                # all losses + TRPO, 16 seeds
    python benchmarks/losses.py --envs Breakout-MinAtar --seeds 2 --timesteps-scale 0.2
    python benchmarks/losses.py --envs Acrobot-v1 --rules trpo ppo_clip

Each environment trains its preset (``purejaxppo/presets.json``) at a fixed budget. The policy
losses are one :func:`purejaxppo.sweeps.sweep` over ``policy_loss`` (every loss x seed in one
compiled program, the loss picked by a traced index); TRPO (``update_rule="trpo"``, plus the
settings below) is a second program. The final return of a seed is its mean ``episode_return``
over the last 5% of updates, as in ``benchmarks/learning.py``. Results accumulate in
``benchmarks/results/losses.{json,md,png}`` (a rerun replaces its own rows).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from purejaxppo import POLICY_LOSSES, PPOConfig  # noqa: E402
from purejaxppo.parallel import use_cpu_cores  # noqa: E402
from purejaxppo.presets import get_preset  # noqa: E402
from purejaxppo.sweeps import final_return, sweep  # noqa: E402

use_cpu_cores()  # before JAX runs anything: the sweep's runs split over the cores

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
        returns = m["episode_return"]  # [seeds, updates]
        final = final_return(returns)
        row = {
            "env": env,
            "rule": rule,
            "total_timesteps": config.total_timesteps,
            "seeds": seeds,
            "final_return_mean": float(final.mean()),
            "final_return_std": float(final.std()),
            "final_return_per_seed": final.round(2).tolist(),
            "last_update_return_mean": float(returns[:, -1].mean()),
            "nonfinite_seeds": int(np.any(m["nonfinite"], axis=-1).sum()),
            "program": f"{len(rules)} x {seeds} runs",
            "program_s": round(seconds, 1),
            "env_steps": m["env_steps"][0].tolist(),
            "curve_mean": returns.mean(axis=0).round(2).tolist(),
            "config": config.replace(policy_loss=rule).to_dict() if grid else config.to_dict(),
        }
        if rule == "trpo":
            steps = m["trpo_line_search_steps"]
            row["trpo_rejected_fraction"] = float((steps == config.line_search_steps).mean())
            row["trpo_kl_max"] = float(m["trpo_kl"].max())
        print(f"{env:18s} {rule:17s} {final.mean():9.1f} +- {final.std():6.1f}  ({seeds} seeds, "
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


def markdown(rows: list[dict]) -> str:
    lines = ["Final return: mean +- std over seeds of each seed's mean episode return in the last "
             "5% of updates. Each environment uses its preset (purejaxppo/presets.json); budgets "
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
                     f"{r['final_return_mean']:.1f} +- {r['final_return_std']:.1f} | "
                     f"{r['program']}: {r['program_s']:.0f} |")
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
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("episode return (mean over seeds)")
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
    args = parser.parse_args(argv)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{NAME}.json"
    losses = [r for r in args.rules if r != "trpo"]
    groups = [g for g in (losses, ["trpo"] if "trpo" in args.rules else []) if g]
    for env in args.envs:
        budget, default_seeds = BUDGETS[env]
        for group in groups:
            rows = run(env, group, args.seeds or default_seeds, int(budget * args.timesteps_scale))
            # Merge into the file as it is now (another run may have written meanwhile), after
            # every program: a long benchmark keeps what it has if interrupted.
            previous = json.loads(out.read_text()) if out.exists() else {}
            merged = {(r["env"], r["rule"]): r for r in previous.get("rows", [])}
            merged.update({(r["env"], r["rule"]): r for r in rows})
            payload = {"device": str(jax.devices()[0]), "jax": jax.__version__,
                       "rows": list(merged.values())}
            out.write_text(json.dumps(payload, indent=1) + "\n")
            (RESULTS / f"{NAME}.md").write_text(markdown(payload["rows"]))
            plot(RESULTS / f"{NAME}.png", payload["rows"])
    if out.exists():
        print(markdown(json.loads(out.read_text())["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

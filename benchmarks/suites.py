"""Learning on each environment suite at budgets that run in minutes on a CPU: mean +- std of the
final return over vmapped seeds, next to the best published figure where one exists.

    python -m benchmarks.suites                                   # every row below, 4 seeds
    python -m benchmarks.suites --envs navix:Navix-Empty-5x5-v0 --seeds 8
    python -m benchmarks.suites --record                          # into benchmarks/results/

Each row is a small PPO config of its own (below; not the suite's preset, which is sized for
accelerators and 1e7-1e9 steps). The final return of a seed is
``purejaxppo.metrics.final_return``: its mean ``episode_return`` over the last 5% of updates.
Writes ``suites.{json,md}`` (``benchmarks/common.py`` decides where); rows not rerun are kept.
"""

from __future__ import annotations

import argparse
import sys

import jax

from benchmarks.common import (
    add_output_flags,
    compile_and_time,
    finals,
    output_dir,
    print_written,
    read_json,
    write_json,
    write_text,
)
from purejaxppo import PPOConfig, make_train

NAME = "suites"

_DISCRETE = dict(num_envs=16, num_steps=128, update_epochs=4, num_minibatches=4, lr=3e-4,
                 ent_coef=0.01, hidden_sizes=(64, 64), activation="tanh")
_CONTINUOUS = dict(num_envs=16, num_steps=256, update_epochs=10, num_minibatches=8, lr=3e-4,
                   ent_coef=0.0, gamma=0.99, hidden_sizes=(64, 64), normalize_obs=True,
                   normalize_reward=True, anneal_lr=False)

# env -> (config settings, reference: the best published figure or the task's maximum)
ROWS: dict[str, tuple[dict, str]] = {
    "brax:inverted_pendulum@spring": (dict(_CONTINUOUS, total_timesteps=196_608),
                                      "1000 is the maximum (1000 steps upright)"),
    "playground:CartpoleBalance": (dict(_CONTINUOUS, total_timesteps=983_040),
                                   "1000 is the maximum (reward <= 1 a step, 1000 steps)"),
    "jumanji:Game2048-v1": (dict(_DISCRETE, total_timesteps=262_144),
                            "no published PPO figure looked up"),
    "craftax:Craftax-Classic-Symbolic-v1": (dict(_DISCRETE, total_timesteps=262_144,
                                                 hidden_sizes=(256, 256)),
                                            "Craftax's paper reports PPO at 1e9 steps (not "
                                            "comparable at this budget; not looked up here)"),
    "navix:Navix-Empty-5x5-v0": (dict(_DISCRETE, total_timesteps=262_144),
                                 "1 is the maximum (reward 1 at the goal)"),
    "xminigrid:MiniGrid-Empty-5x5": (dict(_DISCRETE, total_timesteps=262_144),
                                     "below 1: 1 - 0.9 * steps / max_steps at the goal"),
}


def run(env: str, seeds: int) -> dict:
    settings, reference = ROWS[env]
    config = PPOConfig(env=env, **settings)
    keys = jax.random.split(jax.random.key(0), seeds)
    result, compile_s, run_s = compile_and_time(jax.vmap(make_train(config)), keys)
    final = finals(result.metrics["episode_return"])
    row = {"env": env, "total_timesteps": config.total_timesteps, "seeds": seeds,
           "final_return_mean": final.mean, "final_return_std": final.std,
           "unfinished_seeds": final.unfinished, "reference": reference,
           "compile_s": round(compile_s, 1), "run_s": round(run_s, 1),
           "config": config.to_dict()}
    print(f"{env:38s} {final.mean:9.3f} +- {final.std:7.3f}  ({seeds} seeds, "
          f"{config.total_timesteps:,} steps, compile {compile_s:.0f}s, run {run_s:.0f}s)",
          flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| env | steps | seeds | final return (mean +- std) | reference | compile s | run s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        mean = "nan" if r["final_return_mean"] is None else f"{r['final_return_mean']:.3f}"
        std = "nan" if r["final_return_std"] is None else f"{r['final_return_std']:.3f}"
        lines.append(f"| {r['env']} | {r['total_timesteps']:,} | {r['seeds']} | {mean} +- {std} "
                     f"| {r['reference']} | {r['compile_s']} | {r['run_s']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suites",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", type=int, default=4)
    add_output_flags(parser)
    args = parser.parse_args(argv)
    rows = [run(env, args.seeds) for env in args.envs]
    out = output_dir(args)
    previous = read_json(out / f"{NAME}.json")
    merged = {**{r["env"]: r for r in previous.get("rows", [])}, **{r["env"]: r for r in rows}}
    path = write_json(out / f"{NAME}.json", {"device": str(jax.devices()[0]),
                                             "jax": jax.__version__,
                                             "rows": list(merged.values())})
    table = markdown(read_json(path)["rows"])
    print(table)
    print_written([path, write_text(out / f"{NAME}.md", table)])
    return 0


if __name__ == "__main__":
    sys.exit(main())

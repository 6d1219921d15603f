"""Where an update's time goes: each stage alone, vmapped over seeds, per update.

    python -m benchmarks.stages                         # 1, 16 and 64 seeds, CartPole-v1 defaults
    python -m benchmarks.stages --seeds 16 --updates 20
    python -m benchmarks.stages --record                # writes benchmarks/results/stages.{json,md}

For each seed count, four programs run ``--updates`` updates in one ``lax.scan`` on one device
(the default: JAX's one CPU device), compiled with ``compiler_options()`` as the command line
compiles, each timed as the best of ``--repeats`` runs after a warm-up:

* ``rollout``: the rollout alone (only its rewards are kept, so XLA drops the stored transitions
  and the critic's forward pass, whose values nothing reads);
* ``rollout + advantages``: the rollout and the advantages stage (transitions stored, critic on the
  final observations, GAE);
* ``sgd``: the update rule alone on one fixed batch (4 epochs x 4 minibatch steps by default);
* ``full``: :func:`purejaxppo.train.update_step`, everything an update does.

Prints the table (milliseconds per update, and the env steps/s that rate would give) and writes
``stages.{json,md}`` (``benchmarks/common.py`` says where).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import jax

from benchmarks.common import (
    add_output_flags,
    device_info,
    output_dir,
    print_written,
    write_json,
    write_text,
)
from purejaxppo import PPOConfig
from purejaxppo.parallel import compiler_options
from purejaxppo.train import (
    advantages_batch,
    collect,
    init_state,
    make_agent,
    make_rule,
    update_step,
)

NAME = "stages"
STAGES = ("rollout", "rollout + advantages", "sgd", "full")


def stage_programs(config: PPOConfig, updates: int) -> tuple[dict[str, Callable], Callable]:
    """``({stage: fn(state, batch) -> scalar}, make_inputs(keys) -> (state, batch))``: each ``fn``
    runs ``updates`` updates of one stage for one seed (vmap it over seeds)."""
    agent = make_agent(config)
    hp = config.hyperparams()
    rule = make_rule(agent)

    def next_key(state):
        return jax.random.fold_in(state.key, 1)

    def rollout(state, batch):
        def body(s, _):
            carry, traj, _ = collect(agent, s, hp, s.key)
            return s._replace(env_carry=carry, key=next_key(s)), traj.reward.sum()
        return jax.lax.scan(body, state, None, updates)[1].sum()

    def rollout_advantages(state, batch):
        def body(s, _):
            carry, traj, _ = collect(agent, s, hp, s.key)
            b = advantages_batch(agent, s.params, carry, traj, hp)
            return s._replace(env_carry=carry, key=next_key(s)), b.advantages.sum()
        return jax.lax.scan(body, state, None, updates)[1].sum()

    def sgd(state, batch):
        def body(c, _):
            params, opt_state, key = c
            params, opt_state, metrics = rule.update(params, opt_state, batch, key, hp)
            return (params, opt_state, jax.random.fold_in(key, 1)), metrics["approx_kl"]
        return jax.lax.scan(body, (state.params, state.opt_state, state.key), None,
                            updates)[1].sum()

    def full(state, batch):
        def body(s, _):
            s, metrics = update_step(agent, s, hp)
            return s, metrics["approx_kl"]
        return jax.lax.scan(body, state, None, updates)[1].sum()

    def make_inputs(keys):
        state = jax.jit(jax.vmap(lambda k: init_state(agent, k, hp)))(keys)

        def first_batch(s):
            carry, traj, _ = collect(agent, s, hp, s.key)
            return advantages_batch(agent, s.params, carry, traj, hp)

        return state, jax.jit(jax.vmap(first_batch))(state)

    programs = dict(zip(STAGES, (rollout, rollout_advantages, sgd, full), strict=True))
    return programs, make_inputs


def measure(config: PPOConfig, seeds: int, updates: int, repeats: int) -> list[dict]:
    """One row per stage: milliseconds per update for ``seeds`` vmapped seeds."""
    programs, make_inputs = stage_programs(config, updates)
    state, batch = make_inputs(jax.random.split(jax.random.key(0), seeds))
    rows = []
    for stage, fn in programs.items():
        compiled = jax.jit(jax.vmap(fn), compiler_options=compiler_options()).lower(
            state, batch).compile()
        compiled(state, batch).block_until_ready()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            compiled(state, batch).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        ms = best / updates * 1e3
        rows.append({"seeds": seeds, "stage": stage, "ms_per_update": round(ms, 4),
                     "env_steps_per_s": round(seeds * config.batch_size / (ms / 1e3))})
        print(f"{seeds:3d} seeds  {stage:22s} {ms:9.3f} ms/update", flush=True)
    return rows


def markdown(rows: list[dict], config: PPOConfig) -> str:
    lines = [f"{config.env}, {config.num_envs} envs x {config.num_steps} steps, "
             f"{config.update_epochs} epochs x {config.num_minibatches} minibatches; one device; "
             "milliseconds per update (env steps/s at that rate).", "",
             "| seeds | " + " | ".join(STAGES) + " |", "|---|" + "---|" * len(STAGES)]
    for seeds in sorted({r["seeds"] for r in rows}):
        cells = [f"{r['ms_per_update']:.2f} ({r['env_steps_per_s'] / 1e3:.0f}k)"
                 for stage in STAGES for r in rows if r["seeds"] == seeds and r["stage"] == stage]
        lines.append(f"| {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stages",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--updates", type=int, default=20, help="updates per timed program")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--env", default="CartPole-v1")
    add_output_flags(parser)
    args = parser.parse_args(argv)
    if min(args.seeds) < 1 or args.updates < 1 or args.repeats < 1:
        parser.error("--seeds, --updates and --repeats must be >= 1")
    config = PPOConfig(env=args.env)
    rows = [row for seeds in args.seeds for row in measure(config, seeds, args.updates,
                                                            args.repeats)]
    table = markdown(rows, config)
    print(table)
    out = output_dir(args)
    payload = {**device_info(), "config": config.to_dict(), "updates": args.updates, "rows": rows}
    print_written([write_json(out / f"{NAME}.json", payload),
                   write_text(out / f"{NAME}.md", table)])
    return 0


if __name__ == "__main__":
    sys.exit(main())

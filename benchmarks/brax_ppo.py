"""purejaxppo against Brax's own PPO trainer (``brax.training.agents.ppo``) on Brax environments,
the same settings and budget, in one invocation.

    python -m benchmarks.brax_ppo                                 # inverted_pendulum, halfcheetah
    python -m benchmarks.brax_ppo --envs inverted_pendulum --budget 100000
    python -m benchmarks.brax_ppo --record                        # into benchmarks/results/

Same environment (``brax.envs.get_environment(name, backend)``, 1000-step episodes), same number
of environments, unroll, batch, minibatches, epochs, discount, learning rate, entropy cost,
clipping (0.3), an unclipped value loss (as Brax's), GAE lambda (0.95), observation
normalisation and networks (Brax PPO's defaults: policy 4 x 32, value 5 x 256, swish; built here
as purejaxppo ``Networks``). A Brax PPO update
takes ``batch_size * num_minibatches`` unrolls of ``unroll_length`` steps from ``num_envs``
environments; purejaxppo's rollout is ``num_envs`` x ``batch_size * num_minibatches *
unroll_length / num_envs`` steps, the same data. Differences that remain: Brax squashes its
Gaussian with tanh (purejaxppo clips), Brax bootstraps on its whole unroll sequences
(purejaxppo runs GAE over the whole rollout), and reward scaling (1 here, so none). Brax 0.14's
trainer calls ``jax.device_put_replicated``, which jax 0.10 removed; this module puts an
equivalent in its place (``_replicate``) before calling it.

Measured for each trainer: compile time (purejaxppo: ``compile_and_time``; Brax: its first
training epoch minus its second, both of the same size), env steps per second of training after
compilation (purejaxppo: budget / run time; Brax: its own ``training/sps`` of its last epoch) and
the final return: the mean undiscounted return of 16 deterministic 1000-step evaluation episodes
(Brax: its ``eval/episode_reward``, 128 episodes). Prints the table and writes
``brax_ppo.{json,md}`` (``benchmarks/common.py`` decides where).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import numpy as np

from benchmarks.common import (
    add_output_flags,
    compile_and_time,
    output_dir,
    print_written,
    write_json,
    write_text,
)
from purejaxppo import PPOConfig, make_train
from purejaxppo.acting import make_evaluate
from purejaxppo.networks import Actor, Critic, Networks

NAME = "brax_ppo"

# env -> num_envs, unroll_length, batch_size, num_minibatches, epochs, discount, lr, entropy,
# default budget (env steps). Brax's published PPO settings scaled down in envs and batch to run
# in minutes on a CPU (the published ones use 2048-4096 envs).
SETTINGS: dict[str, dict] = {
    "inverted_pendulum": dict(num_envs=128, unroll_length=5, batch_size=128, num_minibatches=8,
                              epochs=4, discount=0.97, lr=3e-4, entropy=1e-2, budget=102_400),
    "halfcheetah": dict(num_envs=128, unroll_length=20, batch_size=64, num_minibatches=8,
                        epochs=8, discount=0.95, lr=3e-4, entropy=1e-3, budget=204_800),
    "ant": dict(num_envs=128, unroll_length=5, batch_size=128, num_minibatches=8, epochs=4,
                discount=0.97, lr=3e-4, entropy=1e-2, budget=102_400),
}
BACKEND = "positional"
EVAL_EPISODES = 16


def brax_networks(action_size: int) -> Networks:
    """Brax PPO's default networks: policy 4 x 32, value 5 x 256, swish."""
    return Networks(actor=Actor((32,) * 4, action_size, False, "silu"),
                    critic=Critic((256,) * 5, "silu"))


def run_ours(name: str, s: dict, budget: int) -> dict:
    steps_per_env = s["batch_size"] * s["num_minibatches"] * s["unroll_length"] // s["num_envs"]
    batch = s["num_envs"] * steps_per_env
    config = PPOConfig(env=f"brax:{name}@{BACKEND}", num_envs=s["num_envs"],
                       num_steps=steps_per_env, total_timesteps=max(1, budget // batch) * batch,
                       update_epochs=s["epochs"], num_minibatches=s["num_minibatches"],
                       gamma=s["discount"], gae_lambda=0.95, clip_eps=0.3, lr=s["lr"],
                       clip_value=False,
                       ent_coef=s["entropy"], vf_coef=0.5, max_grad_norm=1e9, anneal_lr=False,
                       normalize_obs=True, normalize_reward=False)
    from purejaxppo import envs

    nets = brax_networks(envs.make(config.env).action_size)
    timed = compile_and_time(make_train(config, networks=nets), jax.random.key(0))
    state = timed.result.state
    evaluate = jax.jit(make_evaluate(config, EVAL_EPISODES, deterministic=True, max_steps=1000,
                                     networks=nets))
    returns, _, _ = evaluate(state.params, state.env_carry.normalizer.obs, jax.random.key(1))
    return {"trainer": "purejaxppo", "env_steps": config.total_timesteps,
            "compile_s": round(timed.compile_s, 1),
            "steps_per_s": round(config.total_timesteps / timed.run_s),
            "final_return": float(np.mean(np.asarray(returns)))}


def _replicate(tree, devices):
    """``jax.device_put_replicated``: removed from jax 0.10, still called by Brax 0.14's trainer;
    the same result, a leading axis of one copy per device."""
    return jax.tree.map(lambda x: jax.numpy.stack([x] * len(devices)), tree)


def run_brax(name: str, s: dict, budget: int) -> dict:
    from brax import envs as brax_envs
    from brax.training.agents.ppo import train as brax_ppo

    try:
        jax.device_put_replicated  # noqa: B018
    except AttributeError:
        jax.device_put_replicated = _replicate

    marks: list[tuple[float, int, dict]] = []

    def progress(num_steps: int, metrics: dict) -> None:
        marks.append((time.perf_counter(), int(num_steps), dict(metrics)))

    start = time.perf_counter()
    brax_ppo.train(environment=brax_envs.get_environment(name, backend=BACKEND),
                   num_timesteps=budget, episode_length=1000, num_envs=s["num_envs"],
                   unroll_length=s["unroll_length"], batch_size=s["batch_size"],
                   num_minibatches=s["num_minibatches"], num_updates_per_batch=s["epochs"],
                   discounting=s["discount"], learning_rate=s["lr"], entropy_cost=s["entropy"],
                   normalize_observations=True, reward_scaling=1.0, clipping_epsilon=0.3,
                   gae_lambda=0.95, num_evals=3, num_eval_envs=128, seed=0,
                   progress_fn=progress)
    # marks: eval at 0 (after compiling the eval), after epoch 1 (compile + train), after
    # epoch 2 (train only; Brax's training/sps of that epoch).
    (t0, _, _), (t1, _, _), (t2, steps, last) = marks[0], marks[1], marks[-1]
    epoch1, epoch2 = t1 - t0, t2 - t1
    return {"trainer": "brax.training.agents.ppo", "env_steps": steps,
            "compile_s": round(epoch1 - epoch2, 1),
            "steps_per_s": round(float(last.get("training/sps", np.nan))),
            "final_return": float(last["eval/episode_reward"]),
            "wall_s": round(t2 - start, 1)}


def markdown(rows: list[dict]) -> str:
    lines = ["| env | trainer | env steps | compile s | steps/s | final return |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['env']} | {r['trainer']} | {r['env_steps']:,} | {r['compile_s']} | "
                     f"{r['steps_per_s']:,} | {r['final_return']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.brax_ppo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["inverted_pendulum", "halfcheetah"],
                        choices=list(SETTINGS))
    parser.add_argument("--budget", type=int, default=None,
                        help="env steps per trainer (default: each env's in SETTINGS)")
    add_output_flags(parser)
    args = parser.parse_args(argv)
    rows = []
    for name in args.envs:
        s = SETTINGS[name]
        budget = args.budget or s["budget"]
        for runner in (run_ours, run_brax):
            row = {"env": f"brax:{name}", **runner(name, s, budget)}
            print(f"{row['env']:24s} {row['trainer']:26s} {row['steps_per_s']:>9,} steps/s  "
                  f"compile {row['compile_s']:6.1f}s  return {row['final_return']:8.1f}",
                  flush=True)
            rows.append(row)
        ours, brax = rows[-2], rows[-1]
        print(f"  ratio purejaxppo / Brax PPO: steps/s {ours['steps_per_s'] / brax['steps_per_s']:.2f}, "
              f"return {ours['final_return'] / brax['final_return']:.2f}", flush=True)
    out = output_dir(args)
    payload = {"device": str(jax.devices()[0]), "jax": jax.__version__, "backend": BACKEND,
               "settings": {n: SETTINGS[n] for n in args.envs}, "rows": rows}
    path = write_json(out / f"{NAME}.json", payload)
    table = markdown(rows)
    print(table)
    print_written([path, write_text(out / f"{NAME}.md", table)])
    return 0


if __name__ == "__main__":
    sys.exit(main())

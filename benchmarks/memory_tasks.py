"""Memory tasks: the MLP against the GRU and the LSTM, same settings and budget, on tasks that
need memory.

    python -m benchmarks.memory_tasks                         # every task, 8 seeds each
    python -m benchmarks.memory_tasks --record                # the same, into benchmarks/results/
    python -m benchmarks.memory_tasks --tasks CartPole-NoVelocity-v1 --seeds 2 --steps 300000

Tasks (registered here with :func:`purejaxppo.envs.register`, so ``--imports
benchmarks.memory_tasks`` makes them available to the command line too):

* ``MemoryChain-L5-bsuite`` and ``MemoryChain-L30-bsuite``: gymnax's ``MemoryChain-bsuite`` at
  memory lengths 5 and 30. The first observation shows a bit; after the memory length the agent is
  rewarded +1 for naming it, -1 otherwise. Return 1 needs memory; a policy without any scores 0
  on average.
* ``CartPole-NoVelocity-v1``: CartPole-v1 observing the cart position and the pole angle only
  (no velocities). The fully observed task's return is 500 (``benchmarks/results/learning.md``);
  the target is 90% of it, 450, within 1M steps.

Networks: ``mlp``, ``gru`` and ``lstm`` by default; ``--networks gru-mlp-critic`` adds the GRU
actor with a memoryless MLP critic (:func:`gru_actor_mlp_critic`). Each (task, network) is one
program of vmapped seeds; the final return of a seed is
:func:`purejaxppo.metrics.final_return` (its mean ``episode_return`` over the last 5% of updates).
Prints the table and writes ``memory_tasks.{json,md}`` to a temporary directory, or to
``benchmarks/results/`` with ``--record``; rows not rerun are kept from the file there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (
    add_output_flags,
    compile_and_time,
    finals,
    output_dir,
    print_written,
    read_json,
    use_all_cores,
    whole_rollouts,
    write_json,
    write_text,
)

if __name__ == "__main__":
    # Importing gymnax starts JAX's backend, after which the CPU devices are fixed: one per core
    # first, so that the seeds split over the cores.
    use_all_cores()

from gymnax.environments import spaces as gymnax_spaces  # noqa: E402
from gymnax.environments.bsuite.memory_chain import MemoryChain  # noqa: E402
from gymnax.environments.classic_control.cartpole import CartPole  # noqa: E402

from purejaxppo import PPOConfig, envs, make_train  # noqa: E402
from purejaxppo.networks import (  # noqa: E402
    Critic,
    Networks,
    recurrent_networks,
    register_network,
    zero_carry,
)
from purejaxppo.parallel import seed_sharding

NAME = "memory_tasks"
NETWORKS = ("mlp", "gru", "lstm", "gru-mlp-critic")


class StatelessCritic(nn.Module):
    """The MLP critic behind the recurrent interface: ``V(obs)`` of the current observation only,
    its carry passed through untouched."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, carry: Any, obs: jax.Array, episode_start: jax.Array
                 ) -> tuple[Any, jax.Array]:
        return carry, Critic(tuple(self.hidden_sizes), self.activation)(obs)


def gru_actor_mlp_critic(env: Any, config: PPOConfig) -> Networks:
    """The ``"gru"`` actor with a memoryless MLP critic: one cell per step instead of two, the
    most a shared torso could save in compute (``"gru-mlp-critic"``)."""
    hidden = tuple(config.hidden_sizes)

    def initial_carry(batch_shape: tuple[int, ...]) -> dict:
        return {"actor": zero_carry("gru", hidden[-1], batch_shape),
                "critic": jnp.zeros((*batch_shape, 1), jnp.float32)}

    return recurrent_networks("gru", env, config)._replace(
        critic=StatelessCritic(hidden, config.activation), initial_carry=initial_carry)


register_network("gru-mlp-critic", gru_actor_mlp_critic)


class CartPoleNoVelocity(CartPole):
    """CartPole-v1 observing ``[x, theta]`` only: the velocities must be inferred from history."""

    def get_obs(self, state, params=None, key=None) -> jax.Array:
        return jnp.array([state.x, state.theta])

    @property
    def name(self) -> str:
        return "CartPole-NoVelocity-v1"

    def observation_space(self, params) -> gymnax_spaces.Box:
        high = jnp.array([params.x_threshold * 2, params.theta_threshold_radians * 2])
        return gymnax_spaces.Box(-high, high, (2,), dtype=jnp.float32)


class MemoryChainOfLength(MemoryChain):
    """gymnax's MemoryChain-bsuite with another memory length (its default params' field)."""

    def __init__(self, memory_length: int):
        super().__init__()
        self.memory_length = memory_length

    @property
    def default_params(self):
        return super().default_params.replace(memory_length=self.memory_length)


def memory_chain(memory_length: int):
    """A factory of :class:`MemoryChainOfLength` for ``envs.register``."""
    return lambda: MemoryChainOfLength(memory_length)


envs.register("CartPole-NoVelocity-v1", CartPoleNoVelocity)
envs.register("MemoryChain-L5-bsuite", memory_chain(5))
envs.register("MemoryChain-L30-bsuite", memory_chain(30))


class Task(NamedTuple):
    env: str
    total_timesteps: int
    target: float | None
    """Mean final return the GRU must reach (None: report only)."""
    overrides: dict = {}
    """This task's settings over :data:`SETTINGS` (the same for every network)."""


TASKS = {
    "MemoryChain-L5-bsuite": Task("MemoryChain-L5-bsuite", 500_000, None),
    "MemoryChain-L30-bsuite": Task("MemoryChain-L30-bsuite", 1_000_000, None),
    "CartPole-NoVelocity-v1": Task("CartPole-NoVelocity-v1", 1_000_000, 450.0, {"lr": 5e-4}),
}

SETTINGS = dict(num_envs=16, num_steps=128, update_epochs=4, num_minibatches=4, lr=2.5e-4,
                hidden_sizes=(64, 64))
"""The same for every network: 16 environments (4 whole sequences per minibatch for the recurrent
networks), 128 steps per rollout (the length of truncated backpropagation)."""


def run(task: Task, network: str, seeds: int, steps: int | None) -> dict:
    config = whole_rollouts(PPOConfig(env=task.env, network=network,
                                      **{**SETTINGS, **task.overrides}),
                            steps or task.total_timesteps)
    keys = jax.random.split(jax.random.key(0), seeds)
    sharding = seed_sharding(seeds)
    if sharding is not None:
        keys = jax.device_put(keys, sharding)
    result, compile_s, run_s = compile_and_time(jax.vmap(make_train(config)), keys)
    final = finals(np.asarray(result.metrics["episode_return"]))
    target = task.target if network == "gru" else None
    row = {
        "task": task.env,
        "network": network,
        "total_timesteps": config.total_timesteps,
        "seeds": seeds,
        "final_return_mean": final.mean,
        "final_return_std": final.std,
        "unfinished_seeds": final.unfinished,
        "target": target,
        "passed": None if target is None else bool(final.mean >= target),
        "compile_s": round(compile_s, 2),
        "run_s": round(run_s, 2),
        "steps_per_s": round(seeds * config.num_updates * config.batch_size / run_s),
        "config": config.to_dict(),
    }
    print(f"{task.env:24s} {network:14s} {final.mean:8.2f} +- {final.std:6.2f}  ({seeds} seeds, "
          f"{config.total_timesteps:,} steps, run {run_s:.0f}s)", flush=True)
    return row


def _number(value: float | None, fmt: str) -> str:
    return "nan" if value is None else format(value, fmt)


def markdown(rows: list[dict]) -> str:
    lines = ["| task | network | steps | seeds | final return (mean +- std) | target | passed "
             "| run s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = "report" if r["target"] is None else f">= {r['target']:g}"
        passed = "-" if r["passed"] is None else ("yes" if r["passed"] else "NO")
        lines.append(f"| {r['task']} | {r['network']} | {r['total_timesteps']:,} | {r['seeds']} | "
                     f"{_number(r['final_return_mean'], '.2f')} +- "
                     f"{_number(r['final_return_std'], '.2f')} | {target} | {passed} | "
                     f"{r['run_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_tasks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--networks", nargs="+", default=["mlp", "gru", "lstm"],
                        choices=list(NETWORKS))
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None,
                        help="override every task's budget (a shorter run: the targets still "
                             "apply, so read them as such)")
    add_output_flags(parser)
    args = parser.parse_args(argv)
    if __name__ != "__main__":  # run as a script it has (before gymnax's import)
        use_all_cores()
    rows = [run(TASKS[name], network, args.seeds, args.steps)
            for name in args.tasks for network in args.networks]
    out = output_dir(args)
    previous = read_json(out / f"{NAME}.json")
    key = lambda r: f"{r['task']}/{r['network']}"  # noqa: E731
    merged = {**{key(r): r for r in previous.get("rows", [])}, **{key(r): r for r in rows}}
    payload = {"device": str(jax.devices()[0]), "jax": jax.__version__,
               "rows": list(merged.values())}
    path = write_json(out / f"{NAME}.json", payload)
    table = markdown(read_json(path)["rows"])
    print(table)
    print_written([path, write_text(out / f"{NAME}.md", table)])
    return 0 if all(r["passed"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""rejax PPO on gymnax CartPole-v1: compile time and training throughput.

Runs inside the ``rejax`` venv made by ``setup.sh``. Trains ``--num-seeds``
agents at once (``jax.vmap`` over PRNG keys, as rejax intends), calls the
jitted train function twice and prints one JSON line::

    {"peer": "rejax", "num_seeds": ..., "total_timesteps": ..., "compile_s": ...,
     "first_call_s": ..., "run_s": ..., "steps_per_s": ..., "final_return": ...,
     "versions": {...}}

``compile_s`` is ``jax.jit(...).lower(keys).compile()`` alone (ahead of time,
as ours is timed), ``first_call_s`` that and the first run, ``run_s`` the
second run alone. ``total_timesteps`` is env steps per seed
(whole rollouts, so it may round up); ``steps_per_s`` counts all seeds.
``final_return`` is the mean undiscounted return of rejax's own evaluation
(128 episodes per seed, stochastic policy) after training; it is run outside
the timed calls.

Settings follow the shared ones, with two differences inherent to rejax 0.1.3:
actor and critic have separate Adam optimizers (value loss is not summed into
one loss), and ``max_grad_norm`` feeds ``optax.clip``, an element-wise clip.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from importlib.metadata import version

import jax
import jax.numpy as jnp
import optax
import rejax

NUM_ENVS = 4
NUM_STEPS = 128
NUM_EPOCHS = 4
NUM_MINIBATCHES = 4
LR = 2.5e-4


def make_algo(total_timesteps: int) -> rejax.PPO:
    """Build a rejax PPO with the shared CartPole settings."""
    batch = NUM_ENVS * NUM_STEPS
    num_iterations = math.ceil(total_timesteps / batch)
    # One optimizer step per minibatch; anneal to 0 over all of them.
    num_updates = num_iterations * NUM_EPOCHS * NUM_MINIBATCHES
    return rejax.PPO.create(
        env="CartPole-v1",
        total_timesteps=num_iterations * batch,
        # A single evaluation block: no evaluation inside the training loop.
        eval_freq=num_iterations * batch,
        skip_initial_evaluation=True,
        num_envs=NUM_ENVS,
        num_steps=NUM_STEPS,
        num_epochs=NUM_EPOCHS,
        num_minibatches=NUM_MINIBATCHES,
        learning_rate=optax.linear_schedule(LR, 0.0, num_updates),
        max_grad_norm=0.5,
        gamma=0.99,
        gae_lambda=0.95,
        clip_eps=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        agent_kwargs={"activation": "tanh", "hidden_layer_sizes": (64, 64)},
    )


def main(argv: list[str] | None = None) -> dict:
    """Compile, train twice, evaluate, print and return the result record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-timesteps", type=int, default=500_000)
    parser.add_argument("--num-seeds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    algo = make_algo(args.total_timesteps)
    evaluate = algo.eval_callback
    # Drop rejax's periodic evaluation from the timed train function.
    algo = algo.replace(eval_callback=lambda _algo, _ts, _rng: jnp.zeros(()))
    train = jax.jit(jax.vmap(algo.train))

    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.num_seeds)
    start = time.perf_counter()
    train = train.lower(keys).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(train(keys))
    first_call_s = time.perf_counter() - start

    keys = jax.random.split(jax.random.PRNGKey(args.seed + 1), args.num_seeds)
    start = time.perf_counter()
    ts, _ = jax.block_until_ready(train(keys))
    run_s = time.perf_counter() - start

    eval_keys = jax.random.split(jax.random.PRNGKey(args.seed + 2), args.num_seeds)
    _, returns = jax.jit(jax.vmap(lambda t, k: evaluate(algo, t, k)))(ts, eval_keys)
    steps = int(ts.global_step[0])
    record = {
        "peer": "rejax",
        "num_seeds": args.num_seeds,
        "total_timesteps": steps,
        "compile_s": round(compile_s, 3),
        "first_call_s": round(first_call_s, 3),
        "run_s": round(run_s, 3),
        "steps_per_s": round(args.num_seeds * steps / run_s, 1),
        "final_return": float(jnp.mean(returns)),
        "backend": jax.default_backend(),
        "versions": {
            "python": platform.python_version(),
            **{pkg: version(pkg) for pkg in ("rejax", "gymnax", "jax", "jaxlib", "flax", "optax")},
        },
    }
    print(json.dumps(record), flush=True)
    return record


if __name__ == "__main__":
    main(sys.argv[1:])

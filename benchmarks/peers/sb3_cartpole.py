"""Stable-Baselines3 PPO on gymnasium CartPole-v1: training throughput.

Runs inside the ``sb3`` venv made by ``setup.sh``. Prints one JSON line::

    {"peer": "sb3", "total_timesteps": ..., "run_s": ..., "steps_per_s": ...,
     "final_return": ..., "versions": {...}}

``run_s`` is the wall time of ``PPO.learn`` alone; ``total_timesteps`` is the
number of env steps actually taken (whole rollouts, so it may round up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import gymnasium
import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

LR = 2.5e-4


def linear_lr(progress_remaining: float) -> float:
    """Learning rate annealed linearly from ``LR`` to 0 (SB3 passes 1 -> 0)."""
    return LR * progress_remaining


def main(argv: list[str] | None = None) -> dict:
    """Train once, print and return the result record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-timesteps", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: CPU count)")
    args = parser.parse_args(argv)

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)

    env = make_vec_env("CartPole-v1", n_envs=4, seed=args.seed, vec_env_cls=DummyVecEnv)
    model = PPO(
        "MlpPolicy",
        env,
        learning_rate=linear_lr,
        n_steps=128,
        batch_size=128,  # 4 envs x 128 steps / 128 = 4 minibatches
        n_epochs=4,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        policy_kwargs={
            "net_arch": {"pi": [64, 64], "vf": [64, 64]},
            "activation_fn": torch.nn.Tanh,
        },
        device="cpu",
        seed=args.seed,
        verbose=0,
    )

    start = time.perf_counter()
    model.learn(total_timesteps=args.total_timesteps)
    run_s = time.perf_counter() - start

    steps = int(model.num_timesteps)
    returns = [float(ep["r"]) for ep in model.ep_info_buffer]
    final_return = float(np.mean(returns[-20:])) if returns else None
    record = {
        "peer": "sb3",
        "total_timesteps": steps,
        "run_s": round(run_s, 3),
        "steps_per_s": round(steps / run_s, 1),
        "final_return": final_return,
        "torch_threads": threads,
        "versions": {
            "python": platform.python_version(),
            "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__,
            "gymnasium": gymnasium.__version__,
            "numpy": np.__version__,
        },
    }
    print(json.dumps(record), flush=True)
    return record


if __name__ == "__main__":
    main(sys.argv[1:])

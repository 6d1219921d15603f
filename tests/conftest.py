"""Shared fixtures: one tiny config for the whole suite (8 updates of 4 envs x 64 steps)."""

from __future__ import annotations

import pytest

from purejaxppo import PPOConfig

TINY = dict(total_timesteps=2048, num_envs=4, num_steps=64, update_epochs=2, num_minibatches=2)
"""8 updates of 4 envs x 64 steps, 2 epochs of 2 minibatches: seconds to compile and run."""
TINY_FLAGS = ["--total-timesteps", "2048", "--num-envs", "4", "--num-steps", "64",
              "--update-epochs", "2", "--num-minibatches", "2"]
"""TINY as command-line flags."""


@pytest.fixture(scope="session")
def tiny() -> PPOConfig:
    """CartPole-v1 with :data:`TINY` settings."""
    return PPOConfig(**TINY)

"""navix: adapter (purejaxppo.envs.navix): no reset inside the step, step types decoded."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from conftest import require_suite
from suite_checks import (
    SMALL,
    check_reset_and_step,
    check_trains_and_evaluates,
    check_truncation_keeps_final_obs,
)

from purejaxppo import PPOConfig, sweep
from purejaxppo.envs import spaces

# An optional extra: not installed (`pip install -e ".[test]"`), these tests are skipped with this
# reason; installed (`pip install -e ".[test,envs]"`) but failing to import, they fail.
require_suite("navix", "navix")


def test_navix_empty_truncates_at_max_steps_with_its_final_obs_and_trains():
    env, resets, _ = check_reset_and_step("navix:Navix-Empty-5x5-v0", spaces.Discrete(7))
    assert env.obs_shape == (5, 5, 3) and env.adapter.episode_limit == 100
    _, state = resets[0]
    # Action 1 turns without moving: the episode cannot reach the goal at this step.
    check_truncation_keeps_final_obs(env, state.replace(t=jnp.asarray(99)), resets[1],
                                     jnp.asarray(1))
    check_trains_and_evaluates("navix:Navix-Empty-5x5-v0")


def test_navix_sweeps_a_grid_of_learning_rates():
    result = sweep(PPOConfig(env="navix:Navix-Empty-5x5-v0", **SMALL), seeds=2,
                   grid={"lr": [1e-3, 3e-4]})
    assert result.shape == (2, 2)
    loss = np.asarray(result.result.metrics["value_loss"])
    assert loss.shape[:2] == (2, 2) and np.isfinite(loss).all()

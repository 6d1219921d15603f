"""xminigrid: adapter (purejaxppo.envs.xminigrid)."""

from __future__ import annotations

import jax.numpy as jnp
from conftest import require_suite
from suite_checks import check_reset_and_step, check_trains_and_evaluates, check_truncation_keeps_final_obs

from purejaxppo.envs import spaces

# An optional extra: not installed (`pip install -e ".[test]"`), these tests are skipped with this
# reason; installed (`pip install -e ".[test,envs]"`) but failing to import, they fail.
require_suite("xminigrid", "xminigrid")


def test_xminigrid_empty_truncates_at_max_steps_with_its_final_obs_and_trains():
    env, resets, _ = check_reset_and_step("xminigrid:MiniGrid-Empty-5x5", spaces.Discrete(6))
    assert env.obs_shape == (7, 7, 2)
    _, state = resets[0]
    limit = env.adapter.episode_limit
    at_limit = state.replace(state=state.state.replace(step_num=jnp.asarray(limit - 1)))
    check_truncation_keeps_final_obs(env, at_limit, resets[1],
                                     jnp.asarray(1))  # turn: no goal reached
    check_trains_and_evaluates("xminigrid:MiniGrid-Empty-5x5")

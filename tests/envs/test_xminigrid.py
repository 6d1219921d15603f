"""xminigrid: adapter (purejaxppo.envs.xminigrid)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from suite_checks import check_reset_and_step, check_trains_and_evaluates, check_truncation_keeps_final_obs

from purejaxppo.envs import spaces

# An optional extra: without it (`pip install -e ".[test]"`) these tests are skipped with this
# reason; `pip install -e ".[test,envs]"` runs them.
pytest.importorskip("xminigrid", reason="the xminigrid extra is not installed")


def test_xminigrid_empty_truncates_at_max_steps_with_its_final_obs_and_trains():
    env = check_reset_and_step("xminigrid:MiniGrid-Empty-5x5", spaces.Discrete(6))
    assert env.obs_shape == (7, 7, 2)
    _, state = env.reset(jax.random.key(0))
    limit = env.adapter.episode_limit
    at_limit = state.replace(state=state.state.replace(step_num=jnp.asarray(limit - 1)))
    check_truncation_keeps_final_obs(env, at_limit, jnp.asarray(1))  # turn: no goal reached
    check_trains_and_evaluates("xminigrid:MiniGrid-Empty-5x5")

"""playground: adapter (purejaxppo.envs.playground): DM Control suite tasks."""

from __future__ import annotations

import pytest
from conftest import require_suite
from suite_checks import (
    at_protocol_limit,
    check_reset_and_step,
    check_trains_and_evaluates,
    check_truncation_keeps_final_obs,
)

from purejaxppo import envs
from purejaxppo.envs import spaces

# An optional extra: not installed (`pip install -e ".[test]"`), these tests are skipped with this
# reason; installed (`pip install -e ".[test,envs]"`) but failing to import, they fail.
require_suite("mujoco_playground", "playground")


def test_cartpole_balance_truncates_at_its_episode_length_with_the_final_obs_and_trains():
    env, resets, _ = check_reset_and_step("playground:CartpoleBalance", spaces.Box.of((1,), -1.0, 1.0))
    assert env.time_limit == 1000 and env.obs_size == 5
    _, state = resets[0]
    check_truncation_keeps_final_obs(env, at_protocol_limit(env, state), resets[1])
    check_trains_and_evaluates("playground:CartpoleBalance")


def test_playground_names_other_than_dm_control_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="Did you mean 'playground:CartpoleBalance'.*download"):
        envs.make("playground:CartpoleBalanc")

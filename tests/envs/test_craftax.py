"""craftax: adapter (purejaxppo.envs.craftax): termination apart from the time limit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from conftest import require_suite
from suite_checks import check_reset_and_step, check_trains_and_evaluates, check_truncation_keeps_final_obs

from purejaxppo.envs import spaces

# An optional extra: not installed (`pip install -e ".[test]"`), these tests are skipped with this
# reason; installed (`pip install -e ".[test,envs]"`) but failing to import, they fail.
require_suite("craftax", "craftax")


def test_craftax_classic_truncates_at_max_timesteps_and_dying_terminates():
    env, resets, step = check_reset_and_step("craftax:Craftax-Classic-Symbolic-v1", spaces.Discrete(17))
    assert env.obs_size == 1345 and env.adapter.episode_limit == 10000
    _, state = resets[0]
    check_truncation_keeps_final_obs(env, state.replace(timestep=jnp.asarray(9999)), resets[1])
    dead = state.replace(player_health=jnp.zeros_like(state.player_health),
                       timestep=jnp.asarray(9999))
    _, _, _, terminated, truncated, _ = step(jax.random.key(1), dead, jnp.asarray(0))
    assert bool(terminated) and not bool(truncated)  # death at the last step is termination
    check_trains_and_evaluates("craftax:Craftax-Classic-Symbolic-v1")

"""jumanji: adapter (purejaxppo.envs.jumanji): masks, joint masks, truncation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require_suite
from suite_checks import (
    at_protocol_limit,
    check_reset_and_step,
    check_trains_and_evaluates,
    check_truncation_keeps_final_obs,
)

from purejaxppo import PPOConfig, envs, rollout
from purejaxppo import networks as netlib
from purejaxppo.envs import spaces

# An optional extra: not installed (`pip install -e ".[test]"`), these tests are skipped with this
# reason; installed (`pip install -e ".[test,envs]"`) but failing to import, they fail.
require_suite("jumanji", "jumanji")


def test_snake_maps_its_mask_and_truncates_at_its_time_limit_with_the_final_obs():
    """Snake ends at its time_limit with discount 0 (as a termination): the protocol enforces its
    limit instead, as a truncation."""
    env, resets, step = check_reset_and_step("jumanji:Snake-v1", spaces.Discrete(4))
    assert env.masked and env.time_limit == 4000
    assert env.obs_size == 12 * 12 * 5 + 1  # grid and step count; the mask taken out
    _, state = resets[0]
    mask = np.asarray(env.action_mask(state))
    np.testing.assert_array_equal(mask, np.asarray(state.inner.action_mask))
    valid = jnp.argmax(mask)  # a move that does not bite the body
    check_truncation_keeps_final_obs(env, at_protocol_limit(env, state), resets[1], valid)
    # Far past Snake's own limit, its clock no longer ends the episode.
    late = state._replace(inner=state.inner._replace(
        env_state=state.inner.env_state.replace(step_count=jnp.asarray(5000))))
    assert not bool(step(jax.random.key(1), late, valid)[3])


def test_minesweeper_joint_mask_becomes_one_discrete_over_the_cells():
    env, resets, _ = check_reset_and_step("jumanji:Minesweeper-v0", spaces.Discrete(100))
    assert env.masked and env.adapter.joint_nvec == (10, 10)
    _, state = resets[0]
    # Action 37 is cell (3, 7): after it, that cell is revealed and masked out.
    out = env.adapter.transition(jax.random.key(1), state, jnp.asarray(37))
    assert bool(env.action_mask(state)[37]) and not bool(out[1].action_mask[37])


def test_no_invalid_action_ever_reaches_a_jumanji_env():
    """Game2048 masks moves that change nothing; a rollout of the untrained policy never sends
    one (checked against the mask the environment gave for that step)."""
    env = envs.make("jumanji:Game2048-v1")
    config = PPOConfig(env="jumanji:Game2048-v1", hidden_sizes=(16,))
    nets = netlib.make_networks(env, config)
    params = netlib.init_networks(jax.random.key(0), nets, env.obs_size)
    carry = rollout.init_env_carry(env, jax.random.key(1), 16)
    _, traj, _ = rollout.collect(env, nets, params, carry, jax.random.key(2), 64, 0.99,
                                 False, False)
    mask, action = np.asarray(traj.action_mask), np.asarray(traj.action)
    assert not mask.all()  # some moves were invalid at some step
    assert np.take_along_axis(mask, action[..., None], -1).all()


def test_jumanji_trains_and_evaluates_and_bad_names_are_named():
    check_trains_and_evaluates("jumanji:Snake-v1")
    with pytest.raises(ValueError, match="Did you mean 'jumanji:Snake-v1'"):
        envs.make("jumanji:Snak-v1")
    with pytest.raises(ValueError, match="downloads its level data"):
        envs.make("jumanji:Sokoban-v0")


def test_masks_per_agent_mask_each_factor_of_a_multidiscrete_space():
    """Cleaner: 3 agents x 4 moves, one scalar reward, a mask per agent: a factorised policy whose
    factors are masked by their own rows; sampled actions are valid for every agent."""
    env, resets, _ = check_reset_and_step("jumanji:Cleaner-v0", spaces.MultiDiscrete((4, 4, 4)))
    assert env.masked and env.action_size == 12
    config = PPOConfig(env="jumanji:Cleaner-v0", hidden_sizes=(16,))
    nets = netlib.make_networks(env, config)
    params = netlib.init_networks(jax.random.key(0), nets, env.obs_size)
    carry = rollout.init_env_carry(env, jax.random.key(1), 8)
    _, traj, _ = rollout.collect(env, nets, params, carry, jax.random.key(2), 32, 0.99,
                                 False, False)
    mask, action = np.asarray(traj.action_mask), np.asarray(traj.action)
    assert not mask.all()
    for i in range(3):
        rows = mask[..., 4 * i:4 * i + 4]
        assert np.take_along_axis(rows, action[..., i:i + 1], -1).all()
    with pytest.raises(ValueError, match=r"reward of shape \(2,\) \(one per agent\)"):
        envs.make("jumanji:LevelBasedForaging-v0")


def test_every_jumanji_id_is_made_with_a_bounded_state_or_refused_by_name():
    """Every id Jumanji registers (without a download) either becomes an environment whose
    reset and step states stay small (MMST sizes its state by its clock: with an unbounded clock
    one step asked for 25 GB) or is refused with a ValueError that names it."""
    from purejaxppo.envs import jumanji as adapter

    made = 0
    for name in adapter.registered_ids():
        env_id = f"jumanji:{name}"
        try:
            env = envs.make(env_id)
        except ValueError as e:
            assert env_id in str(e)
            continue
        made += 1
        obs, state = jax.eval_shape(env.reset, jax.random.key(0))
        space = env.action_space
        action = jax.ShapeDtypeStruct(
            (len(space.nvec),) if isinstance(space, spaces.MultiDiscrete) else (), jnp.int32)
        step = jax.eval_shape(env.step, jax.random.key(1), state, action)
        for tree in (state, step):
            size = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
            assert size < 16 << 20, f"{env_id}: a state of {size} bytes"
        if name == "MMST-v0":
            assert env.time_limit == 70
    assert made >= 15


def test_snake_trains_with_a_cnn_on_its_grid_and_its_step_count_beside():
    """``network="cnn"`` on Snake: the flat observation's layout (its ``[12, 12, 5]`` grid, then
    its step count) puts the convolution on the grid, and the step count joins the
    convolution's output; both move the policy; two seeds train with finite metrics."""
    from suite_checks import SMALL

    from purejaxppo import make_train

    env = envs.make("jumanji:Snake-v1")
    assert env.obs_parts == ((12, 12, 5), ()) and env.obs_size == 12 * 12 * 5 + 1
    config = PPOConfig(env="jumanji:Snake-v1", network="cnn", **SMALL)
    nets = netlib.make_networks(env, config)
    params = netlib.init_networks(jax.random.key(0), nets, env.obs_size)
    torso = params["actor"]["params"]["ConvTorso_0"]
    assert torso["Conv_0"]["kernel"].shape == (3, 3, 5, 16)
    assert torso["Dense_0"]["kernel"].shape == (10 * 10 * 16 + 1, 16)  # the step count joins

    obs, _ = jax.jit(env.adapter.reset)(jax.random.key(1))
    logits = jax.jit(lambda o: netlib.policy(nets, params, o).logits)
    base = np.asarray(logits(obs))
    later = obs.at[-1].set(obs[-1] + 100.0)  # the step count
    cell = obs.at[0].set(1.0 - obs[0])  # one value of the grid
    assert not np.allclose(np.asarray(logits(later)), base)
    assert not np.allclose(np.asarray(logits(cell)), base)

    result = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.key(0), 2))
    for name in ("policy_loss", "value_loss", "entropy", "approx_kl"):
        assert np.isfinite(np.asarray(result.metrics[name])).all(), name

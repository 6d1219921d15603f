"""The rollout: truncation recorded apart from termination, with the real last observation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo import PPOConfig


def test_truncation_is_recorded_apart_from_termination():
    """Pendulum never terminates and is cut at 200 steps: every episode end is a truncation."""
    from purejaxppo.rollout import collect, init_env_carry
    from purejaxppo.train import init_state, make_agent

    config = PPOConfig(env="Pendulum-v1", num_envs=2, num_steps=250, total_timesteps=500)
    agent = make_agent(config)
    state = init_state(agent, jax.random.key(0), config.hyperparams())
    carry = init_env_carry(agent.env, jax.random.key(1), 2)
    _, traj, sums = collect(agent.env, agent.nets, state.params, carry, jax.random.key(2), 250,
                            jnp.float32(0.99), False, False)
    assert not bool(traj.terminated.any())
    np.testing.assert_array_equal(np.where(traj.truncated[:, 0])[0], [199])
    assert int(sums.count) == 2
    # final_obs holds the last state of the cut episode; obs at t+1 is the new episode's first.
    assert not np.allclose(traj.final_obs[199], traj.obs[200])
    np.testing.assert_array_equal(traj.final_obs[10], traj.obs[11])


def test_pre_drawn_and_inline_resets_agree_in_distribution_and_shape():
    """Large batches reset inline (no pre-drawn resets): the rollout still ends every Pendulum
    episode at 200 steps and carries on from a fresh start."""
    from purejaxppo import rollout
    from purejaxppo.rollout import collect, init_env_carry
    from purejaxppo.train import init_state, make_agent

    config = PPOConfig(env="Pendulum-v1", num_envs=2, num_steps=250, total_timesteps=500)
    agent = make_agent(config)
    state = init_state(agent, jax.random.key(0), config.hyperparams())
    carry = init_env_carry(agent.env, jax.random.key(1), 2)
    limit = rollout.PREDRAWN_RESET_BYTES
    try:
        rollout.PREDRAWN_RESET_BYTES = 0
        _, traj, sums = collect(agent.env, agent.nets, state.params, carry, jax.random.key(2),
                                250, jnp.float32(0.99), False, False)
    finally:
        rollout.PREDRAWN_RESET_BYTES = limit
    np.testing.assert_array_equal(np.where(traj.truncated[:, 0])[0], [199])
    assert int(sums.count) == 2
    assert not np.allclose(traj.final_obs[199], traj.obs[200])

"""The rollout: truncation recorded apart from termination, with the real last observation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import recurrent_rollout

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


@pytest.mark.parametrize("network", ["gru", "lstm"])
def test_recurrent_carry_resets_exactly_where_episodes_start(network):
    """Every step's policy and value equal a fresh run of the networks over the observations of
    its own episode only, from the initial hidden state: the carry resets at every episode start
    (after a termination and after a truncation) and nowhere else; a truncated episode's
    ``V(final_obs)`` continues the episode's hidden state."""
    from purejaxppo import networks as netlib

    agent, params, _, traj = recurrent_rollout(network)
    done = np.asarray(traj.terminated | traj.truncated)
    assert done.any() and np.asarray(traj.truncated).any() and np.asarray(traj.terminated).any()
    starts = np.asarray(traj.episode_start)
    np.testing.assert_array_equal(starts[0], True)  # the first rollout starts every episode
    np.testing.assert_array_equal(starts[1:], done[:-1])

    # For every step t of env b, in episode [s, e): the sequence obs[s..t], final_obs[t] run
    # from the initial hidden state with no reset at all, zero-padded to one length.
    obs, final_obs = np.asarray(traj.obs), np.asarray(traj.final_obs)
    num_steps, num_envs = done.shape
    seqs, where = [], []
    for b in range(num_envs):
        begins = np.flatnonzero(starts[:, b])
        for s, e in zip(begins, [*begins[1:], num_steps], strict=True):
            for t in range(s, e):
                seq = np.zeros((num_steps + 1, obs.shape[-1]), np.float32)
                seq[:t - s + 1] = obs[s:t + 1, b]
                seq[t - s + 1] = final_obs[t, b]
                seqs.append(seq)
                where.append((t, b, t - s))
    assert len({(b, s) for b in range(num_envs) for s in np.flatnonzero(starts[:, b])}) > num_envs

    @jax.jit
    @jax.vmap
    def fresh_run(seq):
        carry = netlib.initial_carry(agent.nets, (1,))
        no_reset = jnp.zeros((num_steps + 1, 1), bool)
        _, dist = netlib.policy_sequence(agent.nets, params, carry, seq[:, None], no_reset)
        _, value = netlib.value_sequence(agent.nets, params, carry, seq[:, None], no_reset)
        return jax.tree.map(lambda x: x[:, 0], dist), value[:, 0]

    dists, values = fresh_run(jnp.asarray(np.stack(seqs)))
    t, b, k = (np.array(x) for x in zip(*where, strict=True))
    i = np.arange(len(where))
    log_probs = dists.log_prob(jnp.asarray(traj.action)[t, b][:, None])  # [n, T + 1]
    np.testing.assert_allclose(log_probs[i, k], traj.log_prob[t, b], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values[i, k], traj.value[t, b], rtol=1e-5, atol=1e-6)
    # V(final_obs): the critic's hidden state continued on the step's final observation.
    np.testing.assert_allclose(values[i, k + 1], traj.final_value[t, b], rtol=1e-5, atol=1e-6)

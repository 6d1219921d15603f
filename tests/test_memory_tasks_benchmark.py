"""``python -m benchmarks.memory_tasks``: the memoryless-critic network and a real (tiny) row."""

from __future__ import annotations

import json

import jax
import numpy as np

from benchmarks import memory_tasks
from purejaxppo import PPOConfig, envs, make_train


def test_gru_actor_with_mlp_critic_trains_with_one_cell():
    config = PPOConfig(env="CartPole-NoVelocity-v1", network="gru-mlp-critic", num_envs=4,
                       num_steps=32, num_minibatches=2, total_timesteps=4 * 32 * 3,
                       hidden_sizes=(16,))
    result = jax.jit(make_train(config))(jax.random.key(0))
    assert all(np.isfinite(np.asarray(v)).all() for k, v in result.metrics.items()
               if k in ("value_loss", "policy_loss", "entropy"))
    actor = jax.tree_util.tree_flatten_with_path(result.state.params["actor"])[0]
    critic = jax.tree_util.tree_flatten_with_path(result.state.params["critic"])[0]
    assert any("GRUCell" in jax.tree_util.keystr(path) for path, _ in actor)
    assert not any("Cell" in jax.tree_util.keystr(path) for path, _ in critic)
    # The critic's V depends on the current observation only: same obs, other carry, same V.
    from purejaxppo import networks as netlib

    nets = netlib.make_networks(envs.make(config.env), config)
    obs = jax.numpy.ones((1, 3, 2))
    starts = jax.numpy.zeros((1, 3), bool)
    carry = nets.initial_carry((3,))
    _, v1 = netlib.value_sequence(nets, result.state.params, carry, obs, starts)
    _, v2 = netlib.value_sequence(nets, result.state.params,
                                  jax.tree.map(lambda x: x + 5.0, carry), obs, starts)
    np.testing.assert_array_equal(v1, v2)


def test_a_tiny_row_is_written_with_the_network_named(tmp_path):
    code = memory_tasks.main(["--tasks", "MemoryChain-L5-bsuite", "--networks", "gru-mlp-critic",
                              "--seeds", "2", "--steps", "4096", "--out", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "memory_tasks.json").read_text())["rows"]
    assert [(r["task"], r["network"], r["seeds"]) for r in rows] == [
        ("MemoryChain-L5-bsuite", "gru-mlp-critic", 2)]
    assert rows[0]["total_timesteps"] == 4096 and rows[0]["run_s"] > 0
    assert "| MemoryChain-L5-bsuite | gru-mlp-critic |" in (tmp_path / "memory_tasks.md").read_text()

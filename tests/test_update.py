"""Update rules: the minibatch order, the flat-vector optimizer steps, each rule's metrics."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import recurrent_rollout

from purejaxppo import PPOConfig, make_train
from purejaxppo.metrics import COMMON_METRICS
from purejaxppo.train import collect_batch, init_state, make_agent, metric_names
from purejaxppo.update import (
    PPO_METRICS,
    make_optimizer,
    ppo_objective,
    random_order,
    sgd_steps,
    shuffle_sequences,
)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 128, 512, 1000, 4097])
def test_random_order_is_a_permutation(n):
    keys = jax.random.split(jax.random.key(n), 3)
    orders = np.asarray(jax.vmap(lambda k: random_order(k, n))(keys))
    assert orders.dtype == np.int32 and orders.shape == (3, n)
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
    if n >= 5:
        assert not np.array_equal(orders[0], orders[1])  # the key matters


def chi_square(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def test_random_order_is_uniform_over_all_permutations_of_four():
    draws = np.asarray(jax.jit(jax.vmap(lambda k: random_order(k, 4)))(
        jax.random.split(jax.random.key(0), 24_000)))
    index = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([index[tuple(d)] for d in draws], minlength=24)
    # 23 degrees of freedom: the 0.999 quantile is 49.7.
    assert chi_square(counts) < 49.7, counts


def test_random_order_with_several_rounds_is_uniform():
    # n = 1000: 10 index bits leave 22 random bits a round, so two rounds are composed.
    n = 1000
    draws = np.asarray(jax.jit(jax.vmap(lambda k: random_order(k, n)))(
        jax.random.split(jax.random.key(1), 20_000)))
    # Where position 0 and position 999 land: uniform over 20 bins each (0.999 quantile of
    # chi-square with 19 degrees of freedom: 43.8); and the two orders of a pair equally likely.
    for position in (0, n - 1):
        landed = np.argmax(draws == position, axis=1)
        assert chi_square(np.bincount(landed * 20 // n, minlength=20)) < 43.8
    first_before_second = np.mean(np.argmax(draws == 0, 1) < np.argmax(draws == 1, 1))
    assert abs(first_before_second - 0.5) < 0.015


def test_flat_sgd_steps_equal_optax_steps_on_the_parameter_tree():
    config = PPOConfig(total_timesteps=2048, num_envs=4, num_steps=64, update_epochs=3,
                       num_minibatches=4)
    agent = make_agent(config)
    hp = config.hyperparams()
    state = init_state(agent, jax.random.key(3), hp)
    _, batch, _ = collect_batch(agent, state, hp, jax.random.key(4))
    key, lr = jax.random.key(5), jnp.float32(3e-3)
    hp = hp._replace(lr=lr)
    objective = ppo_objective(agent.nets, config, hp, state.opt_state.kl_beta)

    params, opt_state, infos = jax.jit(
        lambda p, o: sgd_steps(p, o, batch, key, hp, objective, config.update_epochs,
                               config.num_minibatches))(state.params, state.opt_state.adam)

    # Reference: the textbook loop, optax on the parameter dict, one minibatch at a time.
    tx = make_optimizer(hp.max_grad_norm)
    ref_params, ref_opt = state.params, state.opt_state.adam
    ref_losses = []
    for epoch_key in jax.random.split(key, config.update_epochs):
        order = np.asarray(random_order(epoch_key, config.batch_size))
        for rows in order.reshape(config.num_minibatches, -1):
            mb = jax.tree.map(lambda x, rows=rows: x[rows], batch)
            grads, info = jax.grad(objective, has_aux=True)(ref_params, mb)
            updates, ref_opt = tx.update(grads, ref_opt, ref_params)
            ref_params = optax.apply_updates(ref_params, jax.tree.map(lambda u: -lr * u, updates))
            ref_losses.append(info.policy_loss)

    assert jax.tree.structure(opt_state) == jax.tree.structure(ref_opt)
    got_leaves = jax.tree.leaves((params, opt_state))
    for got, want in zip(got_leaves, jax.tree.leaves((ref_params, ref_opt)), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(np.ravel(infos.policy_loss), ref_losses, rtol=1e-4, atol=1e-6)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), params,
                                         state.params))
    assert min(float(m) for m in moved) > 0  # every parameter array took steps


def test_random_order_has_no_runs_left_by_tied_random_bits():
    # n = 2^20 leaves 12 random bits a round: one round alone ties ~256 positions per value and
    # keeps them in index order, leaving ~256 runs i, i+1 side by side. Composed rounds must not:
    # a uniform permutation has ~1 such pair.
    n = 1 << 20
    for seed in range(3):
        order = np.asarray(jax.jit(random_order, static_argnums=1)(jax.random.key(seed), n))
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
        assert np.sum(order[1:] == order[:-1] + 1) < 10


@pytest.mark.parametrize("rule, loss", [("ppo", "ppo_clip"), ("ppo", "kl_penalty"),
                                        ("trpo", "ppo_clip")])
def test_each_rule_reports_its_own_metrics(tiny, rule, loss):
    config = tiny.replace(update_rule=rule, policy_loss=loss, total_timesteps=512)
    metrics = jax.jit(make_train(config))(jax.random.key(0)).metrics
    assert tuple(sorted(metrics)) == tuple(sorted(metric_names(config)))
    assert set(COMMON_METRICS) <= set(metrics)
    if rule == "ppo":
        assert set(PPO_METRICS) <= set(metrics) and "trpo_kl" not in metrics
        assert ("kl_beta" in metrics) == (loss == "kl_penalty")
    else:
        assert "clip_fraction" not in metrics and "kl_beta" not in metrics
        assert {"trpo_kl", "trpo_line_search_steps", "trpo_improvement"} <= set(metrics)


@pytest.fixture(scope="module")
def recurrent_batch():
    """A GRU's second rollout of Countdown-v0 (so its sequences start from hidden states that
    are not the initial ones) as a training batch, and parameters moved off the old policy."""
    from purejaxppo.train import advantages_batch

    agent, params, carry, traj = recurrent_rollout("gru", num_steps=10, num_envs=4, rollouts=2)
    batch = advantages_batch(agent, params, carry, traj, agent.config.hyperparams())
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    moved = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                      for x, k in zip(leaves, keys, strict=True)])
    return agent, moved, batch


def test_recurrent_batch_is_whole_sequences_from_a_stored_hidden_state(recurrent_batch):
    _, _, batch = recurrent_batch
    assert batch.obs.shape[:2] == (10, 4) and batch.episode_start.shape == (10, 4)
    assert float(jnp.abs(batch.carry["actor"]).max()) > 0  # mid-episode, not the initial state
    perm = jnp.array([2, 0, 3, 1])
    mbs = shuffle_sequences(batch, perm, 2)
    assert mbs.obs.shape == (2, 10, 2, 3) and mbs.carry["critic"].shape == (2, 2, 8)
    for k, m in itertools.product(range(2), range(2)):
        env = int(perm[2 * k + m])
        np.testing.assert_array_equal(mbs.obs[k, :, m], batch.obs[:, env])
        np.testing.assert_array_equal(mbs.advantages[k, :, m], batch.advantages[:, env])
        np.testing.assert_array_equal(mbs.episode_start[k, :, m], batch.episode_start[:, env])
        np.testing.assert_array_equal(mbs.carry["actor"][k, m], batch.carry["actor"][env])


def test_recurrent_loss_over_sequences_equals_a_step_by_step_recomputation(recurrent_batch):
    """PPO's objective on sequences (the cell re-run by ``lax.scan`` from the stored hidden state,
    resetting at episode starts) equals the same terms computed one step at a time, with the
    resets written out by hand."""
    from purejaxppo import losses
    from purejaxppo import networks as netlib
    from purejaxppo.advantages import normalize_advantages

    agent, params, batch = recurrent_batch
    config, hp = agent.config, agent.config.hyperparams()
    total, info = jax.jit(ppo_objective(agent.nets, config, hp, jnp.float32(1.0)))(params, batch)

    initial = netlib.initial_carry(agent.nets, (4,))
    carry, log_probs, values, entropies = batch.carry, [], [], []
    for t in range(10):
        start = batch.episode_start[t]
        carry = jax.tree.map(lambda c, c0, s=start: jnp.where(s[:, None], c0, c), carry, initial)
        carry, dist, value = netlib.policy_and_value_step(agent.nets, params, carry, batch.obs[t],
                                                          jnp.zeros((4,), bool))
        log_probs.append(dist.log_prob(batch.action[t]))
        values.append(value)
        entropies.append(dist.entropy())
    log_prob, value = jnp.stack(log_probs), jnp.stack(values)
    adv = normalize_advantages(batch.advantages)
    policy_loss = losses.ppo_clip_loss(log_prob, batch.log_prob, adv, hp.clip_eps)
    value_loss = losses.clipped_value_loss(value, batch.value, batch.targets, hp.clip_eps)
    entropy = jnp.mean(jnp.stack(entropies))
    assert abs(float(jnp.mean(jnp.abs(log_prob - batch.log_prob)))) > 1e-3  # off-policy
    np.testing.assert_allclose(info.policy_loss, policy_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(info.value_loss, value_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(info.entropy, entropy, rtol=1e-5)
    np.testing.assert_allclose(total, policy_loss + hp.vf_coef * value_loss
                               - hp.ent_coef * entropy, rtol=1e-5, atol=1e-6)


def test_recurrent_sequence_gradient_ignores_the_other_sequences(recurrent_batch):
    """The gradient of one environment's log-likelihood through its sequence is the same
    whatever the other sequences of the minibatch hold, and nothing flows into them."""
    from purejaxppo.update import batch_policy

    agent, params, batch = recurrent_batch

    def log_lik(p, obs, carry, env):
        dist = batch_policy(agent.nets, p, batch._replace(obs=obs, carry=carry))
        return jnp.sum(dist.log_prob(batch.action)[:, env])

    grad = jax.jit(jax.grad(log_lik, argnums=(0, 1, 2)), static_argnums=3)
    g_params, g_obs, g_carry = grad(params, batch.obs, batch.carry, 1)
    assert float(jnp.abs(g_obs[:, 1]).max()) > 0
    others = np.array([0, 2, 3])
    np.testing.assert_array_equal(g_obs[:, others], 0.0)
    np.testing.assert_array_equal(g_carry["actor"][others], 0.0)
    noisy_obs = batch.obs.at[:, others].add(jax.random.normal(jax.random.key(3), (10, 3, 3)))
    noisy_carry = jax.tree.map(lambda c: c.at[others].add(1.0), batch.carry)
    g_noisy = grad(params, noisy_obs, noisy_carry, 1)[0]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), g_params,
                 g_noisy)


def test_recurrent_minibatches_must_divide_the_environments():
    with pytest.raises(ValueError, match="num_minibatches=3 must divide num_envs=4 for the "
                                         "recurrent network 'gru'"):
        make_agent(PPOConfig(network="gru", num_envs=4, num_steps=12, num_minibatches=3,
                              total_timesteps=480))

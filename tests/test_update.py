"""Update rules: the minibatch order, the flat-vector optimizer steps, each rule's metrics."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from purejaxppo import PPOConfig, make_train
from purejaxppo.metrics import COMMON_METRICS
from purejaxppo.train import collect_batch, init_state, make_agent, metric_names
from purejaxppo.update import PPO_METRICS, make_optimizer, ppo_objective, random_order, sgd_steps


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

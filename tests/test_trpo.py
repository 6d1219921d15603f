"""TRPO: conjugate gradient, Fisher-vector products, the KL bound, learning, determinism, vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from purejaxppo import PPOConfig, envs, make_train
from purejaxppo.distributions import Categorical, DiagGaussian
from purejaxppo.networks import make_networks
from purejaxppo.train import metric_names
from purejaxppo.trpo import conjugate_gradient, fisher_vector_product, trust_region_step

TINY = dict(total_timesteps=4096, num_envs=4, num_steps=64, update_epochs=2, num_minibatches=2,
            update_rule="trpo")


def test_conjugate_gradient_solves_a_random_spd_system():
    n = 12
    m = jax.random.normal(jax.random.key(0), (n, n))
    a = m @ m.T + 0.5 * jnp.eye(n)
    b = jax.random.normal(jax.random.key(1), (n,))
    x = conjugate_gradient(lambda v: a @ v, b, iters=3 * n)
    np.testing.assert_allclose(x, jnp.linalg.solve(a, b), rtol=1e-3, atol=1e-4)
    # A zero right-hand side stays exactly zero (no 0/0).
    np.testing.assert_array_equal(conjugate_gradient(lambda v: a @ v, jnp.zeros(n), 5), 0.0)


def test_kl_methods_match_a_monte_carlo_estimate():
    key = jax.random.key(0)
    p, q = Categorical(jnp.array([0.3, -1.0, 2.0])), Categorical(jnp.array([1.0, 0.2, -0.5]))
    probs = jax.nn.softmax(p.logits)
    want = jnp.sum(probs * (jnp.log(probs) - jax.nn.log_softmax(q.logits)))
    np.testing.assert_allclose(p.kl(q), want, rtol=1e-6)
    np.testing.assert_allclose(p.kl(p), 0.0, atol=1e-7)

    g = DiagGaussian(jnp.array([0.5, -1.0]), jnp.array([0.1, -0.3]))
    h = DiagGaussian(jnp.array([0.0, 0.4]), jnp.array([-0.2, 0.2]))
    a = g.sample(DiagGaussian.noise(key, (200_000,), 2))
    np.testing.assert_allclose(g.kl(h), jnp.mean(g.log_prob(a) - h.log_prob(a)), rtol=2e-2)
    np.testing.assert_allclose(g.kl(g), 0.0, atol=1e-6)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_fisher_vector_product_equals_explicit_fisher_times_vector(env_id):
    env = envs.make(env_id)
    actor = make_networks(env, PPOConfig(env=env_id, hidden_sizes=(8,))).actor
    obs = jax.random.normal(jax.random.key(0), (32, env.obs_size))
    params = actor.init(jax.random.key(1), obs[0])
    theta, unravel = ravel_pytree(params)
    # Move theta so the policy is far from uniform and the Fisher has structure.
    theta = theta + 0.3 * jax.random.normal(jax.random.key(2), theta.shape)
    old = jax.lax.stop_gradient(actor.apply(unravel(theta), obs))

    def kl_fn(flat):
        return jnp.mean(old.kl(actor.apply(unravel(flat), obs)))

    fisher = jax.hessian(kl_fn)(theta)  # explicit [n, n] matrix, only for this test
    v = jax.random.normal(jax.random.key(3), theta.shape)
    damping = 0.1
    got = fisher_vector_product(kl_fn, theta, damping)(v)
    want = fisher @ v + damping * v
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.abs(want).max()))
    # The KL's Hessian at theta_old is symmetric positive semi-definite.
    np.testing.assert_allclose(fisher, fisher.T, atol=1e-5)
    assert float(jnp.linalg.eigvalsh(fisher).min()) > -1e-5


def test_trust_region_step_on_a_quadratic_model():
    # L(theta) = g . theta and a KL whose Hessian at 0 is F: the full step is
    # sqrt(2 delta / g^T F^-1 g) F^-1 g (undamped, enough CG iterations), where the quadratic model
    # of the KL is delta; the small quartic term keeps the true KL just below delta, so the full
    # step is taken.
    f = jnp.diag(jnp.array([1.0, 4.0, 9.0]))
    g = jnp.array([1.0, -2.0, 0.5])
    delta = 0.02

    def kl_below(t):
        q = t @ f @ t
        return 0.5 * q - 1e-3 * q * q

    theta, info = trust_region_step(lambda t: -g @ t, kl_below, jnp.zeros(3), delta, 10, 0.0,
                                    10, 0.5)
    nat = jnp.linalg.solve(f, g)
    np.testing.assert_allclose(theta, jnp.sqrt(2 * delta / (g @ nat)) * nat, rtol=1e-4)
    np.testing.assert_allclose(info.kl, delta, rtol=1e-3)
    assert float(info.kl) <= delta
    assert int(info.line_search_steps) == 0 and float(info.improvement) > 0

    # A KL with a quartic term the quadratic model misses: 5 delta at the full step, so the line
    # search backtracks once, to half the step, where the KL is delta / 2.
    def kl_quartic(t):
        q = t @ f @ t
        return 0.5 * q + q * q / delta

    half, info = trust_region_step(lambda t: -g @ t, kl_quartic, jnp.zeros(3), delta, 10, 0.0,
                                   10, 0.5)
    assert int(info.line_search_steps) == 1
    np.testing.assert_allclose(half, 0.5 * theta, rtol=1e-5)
    np.testing.assert_allclose(info.kl, delta / 2, rtol=1e-3)

    # The linear model promises an improvement that a steep curvature takes back at every
    # candidate: the step is rejected and theta kept.
    theta0 = jnp.array([0.1, 0.2, 0.3])

    def steep(t):
        d = t - theta0
        return -g @ d + 1e4 * d @ d

    kept, info = trust_region_step(steep, lambda t: 0.5 * jnp.sum(jnp.square(t - theta0)), theta0,
                                   delta, 10, 0.1, 4, 0.5)
    np.testing.assert_array_equal(kept, theta0)
    assert int(info.line_search_steps) == 4
    assert float(info.kl) == 0.0 and float(info.improvement) == 0.0


@pytest.fixture(scope="module")
def trpo_tiny():
    config = PPOConfig(**TINY)
    train = jax.jit(make_train(config))
    return config, train, train(jax.random.key(0))


def test_trpo_metrics_present_finite_and_every_step_within_the_kl_bound(trpo_tiny):
    config, _, result = trpo_tiny
    assert set(result.metrics) == set(metric_names(config))
    for name, value in result.metrics.items():
        assert value.shape == (config.num_updates,), name
        assert bool(jnp.all(jnp.isfinite(value))), name
    kl = np.asarray(result.metrics["trpo_kl"])
    steps = np.asarray(result.metrics["trpo_line_search_steps"])
    improvement = np.asarray(result.metrics["trpo_improvement"])
    assert np.all(kl <= config.max_kl * (1 + 1e-3))
    accepted = steps < config.line_search_steps
    assert accepted.mean() > 0.5
    assert np.all(kl[accepted] > 0) and np.all(improvement[accepted] > 0)
    assert np.all(kl[~accepted] == 0) and np.all(improvement[~accepted] == 0)
    # PPO's own KL diagnostic agrees with the exact KL of the step (sample vs analytic).
    np.testing.assert_allclose(result.metrics["approx_kl"][accepted], kl[accepted], rtol=0.5)


def test_trpo_is_deterministic_and_vmap_equals_single_runs(trpo_tiny):
    config, train, result = trpo_tiny
    again = train(jax.random.key(0))
    for a, b in zip(jax.tree.leaves((result.params, result.metrics)),
                    jax.tree.leaves((again.params, again.metrics)), strict=True):
        np.testing.assert_array_equal(a, b)
    # vmap batches the matmuls differently, and conjugate gradient amplifies the last-bit
    # differences a little (the Fisher is ill-conditioned), hence looser tolerances than PPO's;
    # every discrete decision (line search, episodes) must be the same.
    keys = jax.random.split(jax.random.key(5), 3)
    batched = jax.jit(jax.vmap(make_train(config)))(keys)
    for i in range(3):
        single = train(keys[i])
        for name in ("trpo_line_search_steps", "episode_return", "episode_length"):
            np.testing.assert_array_equal(single.metrics[name], batched.metrics[name][i])
        for a, b in zip(jax.tree.leaves((single.params, single.metrics)),
                        jax.tree.leaves((batched.params, batched.metrics)), strict=True):
            a, b = np.asarray(a, np.float64), np.asarray(b[i], np.float64)
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)


def test_trpo_trains_the_critic_with_adam_and_only_the_critic(trpo_tiny):
    _, _, result = trpo_tiny
    # The actor's Adam moments stay zero (it gets no gradient there); the critic's move.
    mu = result.state.opt_state[1].mu  # (clip_by_global_norm state, ScaleByAdamState)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(mu["actor"]))
    assert any(float(jnp.abs(x).max()) > 0.0 for x in jax.tree.leaves(mu["critic"]))


def test_short_trpo_cartpole_run_improves_its_return():
    # The benchmark's CartPole TRPO setting (benchmarks/policy_losses.py), 30 updates of 2048 steps.
    config = PPOConfig(update_rule="trpo", num_envs=16, gae_lambda=0.97, lr=3e-3,
                       total_timesteps=30 * 2048)
    returns = np.asarray(jax.jit(make_train(config))(jax.random.key(0)).metrics["episode_return"])
    assert returns[:3].mean() < 40  # a random policy: ~22
    assert returns[-5:].mean() > 4 * returns[:3].mean() and returns[-5:].mean() > 100


@pytest.mark.parametrize("field,value", [
    ("update_rule", "sgd"), ("max_kl", 0.0), ("cg_iters", 0), ("cg_damping", -1.0),
    ("line_search_steps", 0), ("line_search_decay", 1.0),
])
def test_invalid_trpo_settings_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        PPOConfig(**{field: value})

"""make_train on real gymnax environments: correctness of GAE, shapes, determinism, learning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import POLICY_LOSSES, PPOConfig, make_train, policy
from purejaxppo import normalize as norm
from purejaxppo.advantages import bootstrap_values, gae
from purejaxppo.distributions import Categorical, DiagGaussian
from purejaxppo.env import make_env, reset, step
from purejaxppo.metrics import METRICS
from purejaxppo.parallel import compiler_options

TINY = dict(total_timesteps=2048, num_envs=4, num_steps=64, update_epochs=2, num_minibatches=2)


def python_gae(rewards, values, last_value, final_values, terminated, truncated, gamma, lam):
    """Plain-Python GAE for one environment, written from the definition."""
    T = len(rewards)
    adv = [0.0] * T
    running = 0.0
    for t in reversed(range(T)):
        if terminated[t]:
            next_v = 0.0
        elif truncated[t]:
            next_v = final_values[t]
        else:
            next_v = values[t + 1] if t + 1 < T else last_value
        delta = rewards[t] + gamma * next_v - values[t]
        if terminated[t] or truncated[t]:
            running = 0.0  # the episode ended: nothing after it belongs to its advantage
        running = delta + gamma * lam * running
        adv[t] = running
    return np.array(adv)


def test_gae_matches_python_on_a_hand_made_trajectory():
    rewards = np.array([1.0, 0.5, 1.0, 2.0, 0.0, 1.0, -1.0, 1.0])
    values = np.array([0.3, 0.2, 0.9, 1.5, 0.1, 0.4, 0.7, 0.2])
    final_values = np.array([9.0, 9.0, 5.0, 9.0, 9.0, 3.0, 9.0, 9.0])  # only used where truncated
    terminated = np.array([0, 1, 0, 0, 0, 1, 0, 0], bool)
    truncated = np.array([0, 0, 1, 0, 0, 1, 0, 0], bool)  # step 5: both (terminal wins)
    last_value, gamma, lam = 0.8, 0.9, 0.8
    next_v = bootstrap_values(jnp.asarray(values), jnp.asarray(last_value), jnp.asarray(final_values),
                              jnp.asarray(terminated), jnp.asarray(truncated))
    adv, ret = gae(jnp.asarray(rewards), jnp.asarray(values), next_v,
                   jnp.asarray(terminated | truncated), gamma, lam)
    want = python_gae(rewards, values, last_value, final_values, terminated, truncated, gamma, lam)
    np.testing.assert_allclose(adv, want, rtol=1e-6)
    np.testing.assert_allclose(ret, want + values, rtol=1e-6)
    # The truncated step bootstraps from V(final_obs)=5.0, not from the next episode's V=1.5.
    np.testing.assert_allclose(adv[2], 1.0 + gamma * 5.0 - 0.9, rtol=1e-6)
    # Terminated steps bootstrap from 0, even when also truncated.
    np.testing.assert_allclose(adv[5], 1.0 - 0.4, rtol=1e-6)


def test_gae_batched_over_envs_matches_per_env():
    rng = np.random.default_rng(1)
    T, N = 20, 3
    r, v, fv = rng.normal(size=(3, T, N))
    lv = rng.normal(size=N)
    term, trunc = rng.random((T, N)) < 0.1, rng.random((T, N)) < 0.1
    next_v = bootstrap_values(*map(jnp.asarray, (v, lv, fv, term, trunc)))
    adv, _ = gae(jnp.asarray(r), jnp.asarray(v), next_v, jnp.asarray(term | trunc), 0.99, 0.95)
    for n in range(N):
        want = python_gae(r[:, n], v[:, n], lv[n], fv[:, n], term[:, n], trunc[:, n], 0.99, 0.95)
        np.testing.assert_allclose(adv[:, n], want, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def cartpole_tiny():
    config = PPOConfig(**TINY)
    train = jax.jit(make_train(config))
    return config, train, train(jax.random.key(0))


def test_metrics_have_one_value_per_update_and_are_finite(cartpole_tiny):
    config, _, result = cartpole_tiny
    assert set(result.metrics) == set(METRICS)
    for name, value in result.metrics.items():
        assert value.shape == (config.num_updates,), name
        assert bool(jnp.all(jnp.isfinite(value))), name
    np.testing.assert_array_equal(result.metrics["env_steps"],
                                  np.arange(1, config.num_updates + 1) * config.batch_size)
    lr = np.asarray(result.metrics["learning_rate"])
    np.testing.assert_allclose(lr, 2.5e-4 * (1 - np.arange(config.num_updates) / config.num_updates))
    assert int(result.state.update) == config.num_updates


def test_same_key_same_result_bit_for_bit_and_legacy_keys(cartpole_tiny):
    _, train, result = cartpole_tiny
    again = train(jax.random.key(0))
    legacy = train(jax.random.PRNGKey(0))
    other = train(jax.random.key(1))
    for a, b, c in zip(jax.tree.leaves((result.params, result.metrics)),
                       jax.tree.leaves((again.params, again.metrics)),
                       jax.tree.leaves((legacy.params, legacy.metrics)), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert not np.array_equal(result.metrics["value_loss"], other.metrics["value_loss"])


def test_compiler_options_change_compile_time_not_results():
    assert compiler_options("gpu") == {} and compiler_options("tpu") == {}
    assert compiler_options("cpu") == {"xla_backend_optimization_level": 1}
    assert compiler_options() == compiler_options(jax.default_backend())
    config = PPOConfig(env="Pendulum-v1", total_timesteps=4096, num_envs=4, num_steps=128,
                       normalize_obs=True, normalize_reward=True)
    train = make_train(config)
    plain = jax.jit(train)(jax.random.key(2))
    fast = jax.jit(train, compiler_options=compiler_options("cpu"))(jax.random.key(2))
    for a, b in zip(jax.tree.leaves((plain.params, plain.metrics, plain.state.env)),
                    jax.tree.leaves((fast.params, fast.metrics, fast.state.env)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_vmapped_seed_equals_single_run(cartpole_tiny):
    config, train, _ = cartpole_tiny
    keys = jax.random.split(jax.random.key(42), 3)
    batched = jax.jit(jax.vmap(make_train(config)))(keys)
    for i in range(3):
        single = train(keys[i])
        for a, b in zip(jax.tree.leaves((single.params, single.metrics)),
                        jax.tree.leaves((batched.params, batched.metrics)), strict=True):
            np.testing.assert_allclose(a, b[i], rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("env_id,extra", [
    ("Acrobot-v1", {}),
    ("Breakout-MinAtar", {}),
    ("Pendulum-v1", {"normalize_obs": True, "normalize_reward": True}),
    ("MountainCarContinuous-v0", {"normalize_obs": True}),
])
def test_other_environments_train_with_finite_metrics(env_id, extra):
    config = PPOConfig(env=env_id, **TINY, **extra)
    result = jax.jit(make_train(config))(jax.random.key(3))
    for name, value in result.metrics.items():
        assert value.shape == (config.num_updates,), name
        assert bool(jnp.all(jnp.isfinite(value))), (env_id, name)
    for leaf in jax.tree.leaves(result.params):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    spec = make_env(env_id)
    if not spec.discrete:
        assert result.params["actor"]["params"]["log_std"].shape == (spec.action_size,)


def test_discrete_observations_are_one_hot_and_train():
    spec = make_env("FrozenLake-misc")
    n = int(spec.env.observation_space(spec.params).n)
    assert spec.obs_categories == n and spec.obs_size == n
    keys = jax.random.split(jax.random.key(0), 5)
    raw = jax.vmap(lambda k: spec.env.reset(k, spec.params)[0])(keys)
    obs, _ = reset(spec, keys)
    np.testing.assert_array_equal(obs, np.eye(n, dtype=np.float32)[np.asarray(raw)])
    config = PPOConfig(env="FrozenLake-misc", **TINY)
    result = jax.jit(make_train(config))(jax.random.key(1))
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in result.metrics.values())
    kernel = result.params["actor"]["params"]["MLP_0"]["Dense_0"]["kernel"]
    assert kernel.shape[0] == n
    act = policy(config)
    actions = act(result.params, raw, jax.random.key(2))  # raw cell indices, batched
    assert actions.shape == (5,) and bool(jnp.all((actions >= 0) & (actions < spec.action_size)))


@pytest.mark.parametrize("loss", sorted(POLICY_LOSSES))
def test_every_policy_loss_trains(loss):
    config = PPOConfig(policy_loss=loss, **TINY)
    result = jax.jit(make_train(config))(jax.random.key(0))
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in result.metrics.values())
    beta = np.asarray(result.metrics["kl_beta"])
    if loss == "kl_penalty":
        # The adaptive beta moves by factors of 2 as KL leaves the target band.
        assert len(set(beta.tolist())) > 1
        ratios = beta[1:] / beta[:-1]
        assert set(np.round(ratios, 6).tolist()) <= {0.5, 1.0, 2.0}
    else:
        assert set(beta.tolist()) == {1.0}


def test_short_cartpole_run_improves():
    config = PPOConfig(total_timesteps=60_000)
    returns = np.asarray(jax.jit(make_train(config))(jax.random.key(0)).metrics["episode_return"])
    start, end = returns[:5].mean(), returns[-5:].mean()
    assert end > start + 50, (start, end)


def test_gaussian_log_prob_is_of_the_unclipped_sample_and_env_gets_clipped_actions():
    spec = make_env("Pendulum-v1")
    dist = DiagGaussian(jnp.array([[1.9]]), jnp.array([0.0]))
    action = dist.sample(jnp.array([[2.0]]))  # 3.9: outside [-2, 2]
    np.testing.assert_allclose(action, [[3.9]], rtol=1e-6)
    want = -0.5 * 2.0**2 - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(dist.log_prob(action), [want], rtol=1e-6)
    keys = jax.random.split(jax.random.key(0), 1)
    obs, state = jax.vmap(spec.env.reset, in_axes=(0, None))(keys, spec.params)
    out_clipped = step(spec, keys, state, jnp.array([[3.9]]))
    out_bound = step(spec, keys, state, jnp.array([[2.0]]))
    np.testing.assert_array_equal(out_clipped[0], out_bound[0])
    np.testing.assert_array_equal(out_clipped[2], out_bound[2])


def test_categorical_sampling_matches_probabilities():
    logits = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    dist = Categorical(jnp.broadcast_to(logits, (20000, 3)))
    actions = dist.sample(Categorical.noise(jax.random.key(0), (20000,), 3))
    freq = np.bincount(np.asarray(actions), minlength=3) / 20000
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=0.015)


def test_truncation_is_recorded_apart_from_termination():
    """Pendulum never terminates and is cut at 200 steps: every episode end is a truncation."""
    from purejaxppo.rollout import collect, init_env_carry
    from purejaxppo.train import init_state, make_agent

    config = PPOConfig(env="Pendulum-v1", num_envs=2, num_steps=250, total_timesteps=500)
    agent = make_agent(config)
    state = init_state(agent, jax.random.key(0), config.hyperparams())
    carry = init_env_carry(agent.spec, jax.random.key(1), 2)
    _, traj, sums = collect(agent.spec, agent.actor, agent.critic, state.params, carry,
                            jax.random.key(2), 250, jnp.float32(0.99), False, False)
    assert not bool(traj.terminated.any())
    np.testing.assert_array_equal(np.where(traj.truncated[:, 0])[0], [199])
    assert int(sums.count) == 2
    # final_obs holds the last state of the cut episode; obs at t+1 is the new episode's first.
    assert not np.allclose(traj.final_obs[199], traj.obs[200])
    np.testing.assert_array_equal(traj.final_obs[10], traj.obs[11])


def test_running_stats_match_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(300, 5))
    stats = norm.init_stats((5,))
    for chunk in np.split(data, 6):
        stats = norm.update_stats(stats, jnp.asarray(chunk))
    np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-4)
    np.testing.assert_allclose(stats.var, data.var(0), rtol=1e-3)


@pytest.mark.parametrize("kwargs,field", [
    ({"num_envs": 0}, "num_envs"),
    ({"num_minibatches": 3}, "num_minibatches"),
    ({"gamma": 1.5}, "gamma"),
    ({"lr": -1.0}, "lr"),
    ({"policy_loss": "ppo"}, "policy_loss"),
    ({"activation": "sigmoid"}, "activation"),
    ({"total_timesteps": 10}, "total_timesteps"),
    ({"clip_eps": 0.0}, "clip_eps"),
    ({"num_steps": 2.5}, "num_steps"),
    ({"num_steps": 0}, "num_steps"),
    ({"update_epochs": -1}, "update_epochs"),
    ({"num_minibatches": 0}, "num_minibatches"),
    ({"total_timesteps": 0}, "total_timesteps"),
    ({"gamma": 0.0}, "gamma"),
    ({"gae_lambda": 1.5}, "gae_lambda"),
    ({"gae_lambda": -0.1}, "gae_lambda"),
    ({"clip_eps": 1.5}, "clip_eps"),
    ({"ent_coef": -0.01}, "ent_coef"),
    ({"vf_coef": -1.0}, "vf_coef"),
    ({"max_grad_norm": 0.0}, "max_grad_norm"),
    ({"lr": float("nan")}, "lr"),
    ({"lr": float("inf")}, "lr"),
    ({"kl_target": 0.0}, "kl_target"),
    ({"kl_beta_init": -1.0}, "kl_beta_init"),
    ({"hidden_sizes": ()}, "hidden_sizes"),
    ({"hidden_sizes": (64, 0)}, "hidden_sizes"),
    ({"anneal_lr": "yes"}, "anneal_lr"),
    ({"num_envs": True}, "num_envs"),
    ({"env": ""}, "env"),
])
def test_bad_config_gives_clear_error(kwargs, field):
    (value,) = kwargs.values()
    with pytest.raises(ValueError, match=rf"PPOConfig\.{field}=") as error:
        PPOConfig(**kwargs)
    message = str(error.value)
    assert repr(value) in message and "invalid: " in message  # field, bad value, what is allowed
    assert "\n" not in message


def test_budget_that_is_not_whole_rollouts_warns():
    with pytest.warns(UserWarning, match="not a multiple of num_envs \\* num_steps = 512"):
        config = PPOConfig(total_timesteps=1000)
    assert config.num_updates == 1


def test_bad_env_suggests_close_names():
    with pytest.raises(ValueError, match="CartPole-v1"):
        make_train(PPOConfig(env="Cartpole-v1"))
    with pytest.raises(ValueError, match="download"):
        make_train(PPOConfig(env="MNISTBandit-bsuite"))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Breakout-MinAtar", "Pendulum-v1"])
def test_own_autoreset_matches_gymnax_step(env_id):
    """With a pre-drawn reset, our step equals gymnax's step_env + auto-reset semantics."""
    from purejaxppo.env import reset_batch
    spec = make_env(env_id)
    n = 64
    keys = jax.random.split(jax.random.key(0), n)
    _, state = jax.vmap(spec.env.reset, in_axes=(0, None))(keys, spec.params)
    # Put every env one step from its time limit, so some steps truncate.
    state = state.replace(time=jnp.full((n,), spec.params.max_steps_in_episode - 1))
    actions = (jax.random.randint(jax.random.key(1), (n,), 0, spec.action_size) if spec.discrete
               else jax.random.normal(jax.random.key(1), (n, spec.action_size)))
    step_keys = jax.random.split(jax.random.key(2), n)
    reset = reset_batch(spec, jax.random.split(jax.random.key(3), n))
    ours = step(spec, step_keys, state, actions, reset)
    theirs = step(spec, step_keys, state, actions)  # gymnax's own step (resets with its keys)
    obs, new_state, reward, term, trunc, final_obs = ours
    assert bool(trunc.all())
    # gymnax's step is its own jitted program (fused arithmetic): equal up to float rounding.
    np.testing.assert_allclose(final_obs, theirs[5], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reward, theirs[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(term, theirs[3])
    np.testing.assert_array_equal(trunc, theirs[4])
    np.testing.assert_array_equal(obs, reset[0])  # every env ended: all were reset
    assert int(new_state.time.max()) == 0


def test_nonfinite_update_freezes_the_last_finite_parameters():
    """A deliberately exploding run: learning stops at the first NaN, params stay finite."""
    kwargs = dict(env="Pendulum-v1", num_envs=4, num_steps=64, lr=1e12, max_grad_norm=1e30,
                  anneal_lr=False)
    config = PPOConfig(total_timesteps=8 * 256, **kwargs)
    result = jax.jit(make_train(config))(jax.random.key(0))
    first = int(result.state.first_nonfinite)
    assert 0 <= first < config.num_updates
    flags = np.asarray(result.metrics["nonfinite"])
    assert not flags[:first].any() and flags[first]
    for leaf in jax.tree.leaves(result.params):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    # The frozen parameters are exactly those after the last finite update.
    if first > 0:
        shorter = jax.jit(make_train(PPOConfig(total_timesteps=first * 256, **kwargs)))(jax.random.key(0))
        for a, b in zip(jax.tree.leaves(shorter.params), jax.tree.leaves(result.params), strict=True):
            np.testing.assert_array_equal(a, b)


def test_healthy_run_reports_no_nonfinite(cartpole_tiny):
    _, _, result = cartpole_tiny
    assert int(result.state.first_nonfinite) == -1
    assert not np.asarray(result.metrics["nonfinite"]).any()

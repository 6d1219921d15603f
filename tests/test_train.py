"""make_train on real environments: shapes, determinism, every loss and env, learning."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import OPTIMIZED, TINY, USERS_EMITTERS, USERS_XLA

from purejaxppo import POLICY_LOSSES, PPOConfig, envs, make_init, make_run, make_train, policy
from purejaxppo import networks as netlib
from purejaxppo.parallel import compiler_options, cpu_vendor
from purejaxppo.train import make_agent, metric_names

GOLDEN = Path(__file__).parent / "data" / "cartpole_default_key0.npz"


@pytest.fixture(scope="module")
def cartpole_tiny():
    config = PPOConfig(**TINY)
    train = jax.jit(make_train(config))
    return config, train, train(jax.random.key(0))


def test_metrics_have_one_value_per_update_and_are_finite(cartpole_tiny):
    config, _, result = cartpole_tiny
    assert set(result.metrics) == set(metric_names(config))
    for name, value in result.metrics.items():
        assert value.shape == (config.num_updates,), name
        assert bool(jnp.all(jnp.isfinite(value))), name
    np.testing.assert_array_equal(result.metrics["env_steps"],
                                  np.arange(1, config.num_updates + 1) * config.batch_size)
    lr = np.asarray(result.metrics["learning_rate"])
    np.testing.assert_allclose(lr, 2.5e-4 * (1 - np.arange(config.num_updates) / config.num_updates))
    assert int(result.state.updates_done) == config.num_updates


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
    o1 = {"xla_backend_optimization_level": 1}
    assert compiler_options("cpu", "AuthenticAMD") == o1
    assert compiler_options("cpu", "GenuineIntel") == o1
    # Not where it was never measured: other vendors, or an unknown one.
    assert compiler_options("cpu", "ARM") == {} and compiler_options("cpu", "") == {}
    assert compiler_options("gpu", "AuthenticAMD") == {}
    assert compiler_options() == compiler_options(jax.default_backend(), cpu_vendor())
    config = PPOConfig(env="Pendulum-v1", total_timesteps=4096, num_envs=4, num_steps=128,
                       normalize_obs=True, normalize_reward=True)
    train = make_train(config)
    # -O2 and XLA's own fusion emitters named explicitly: the suite's XLA_FLAGS (conftest.py)
    # ask for -O0 and other emitters by default.
    plain = jax.jit(train, compiler_options=USERS_XLA)(jax.random.key(2))
    fast = jax.jit(train, compiler_options={**o1, **USERS_EMITTERS})(jax.random.key(2))
    for a, b in zip(jax.tree.leaves((plain.params, plain.metrics, plain.state.env_carry)),
                    jax.tree.leaves((fast.params, fast.metrics, fast.state.env_carry)),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_vmapped_seed_equals_single_run(cartpole_tiny):
    config, _, _ = cartpole_tiny
    keys = jax.random.split(jax.random.key(42), 3)
    # Both optimized (conftest.OPTIMIZED): unoptimized code rounds further apart than asserted.
    batched = jax.jit(jax.vmap(make_train(config)), compiler_options=OPTIMIZED)(keys)
    train = jax.jit(make_train(config), compiler_options=OPTIMIZED)
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
        finite = np.isfinite(np.asarray(value))
        if name in ("episode_return", "episode_length"):
            # NaN until the first episode finishes (Acrobot's first ones last up to 500 steps,
            # MountainCarContinuous's 999: more than this run's 512), then finite.
            assert finite[np.argmax(finite):].all() if finite.any() else env_id.startswith(
                "MountainCarContinuous"), (env_id, name, value)
        else:
            assert finite.all(), (env_id, name)
    for leaf in jax.tree.leaves(result.params):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    env = envs.make(env_id)
    if not env.discrete:
        assert result.params["actor"]["params"]["log_std"].shape == (env.action_size,)


def test_discrete_observations_train_and_act():
    env = envs.make("FrozenLake-misc")
    n = env.obs_size
    raw = jax.vmap(lambda k: env.adapter.reset(k)[0])(jax.random.split(jax.random.key(0), 5))
    config = PPOConfig(env="FrozenLake-misc", **TINY)
    result = jax.jit(make_train(config))(jax.random.key(1))
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in result.metrics.values())
    kernel = result.params["actor"]["params"]["MLP_0"]["Dense_0"]["kernel"]
    assert kernel.shape[0] == n
    act = policy(config)
    actions = act(result.params, raw, jax.random.key(2))  # raw cell indices, batched
    assert actions.shape == (5,) and bool(jnp.all((actions >= 0) & (actions < env.action_size)))


@pytest.mark.parametrize("loss", sorted(POLICY_LOSSES))
def test_every_policy_loss_trains(loss):
    config = PPOConfig(policy_loss=loss, **TINY)
    result = jax.jit(make_train(config))(jax.random.key(0))
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in result.metrics.values())
    if loss == "kl_penalty":
        # The adaptive beta moves by factors of 2 as KL leaves the target band.
        beta = np.asarray(result.metrics["kl_beta"])
        assert len(set(beta.tolist())) > 1
        ratios = beta[1:] / beta[:-1]
        assert set(np.round(ratios, 6).tolist()) <= {0.5, 1.0, 2.0}
    else:
        assert "kl_beta" not in result.metrics
        assert float(result.state.opt_state.kl_beta) == 1.0


def test_short_cartpole_run_improves():
    config = PPOConfig(total_timesteps=117 * 512)
    returns = np.asarray(jax.jit(make_train(config))(jax.random.key(0)).metrics["episode_return"])
    start, end = returns[:5].mean(), returns[-5:].mean()
    assert end > start + 50, (start, end)


def test_nonfinite_update_freezes_the_last_finite_parameters():
    """A deliberately exploding run: learning stops at the first NaN, params stay finite."""
    kwargs = dict(env="Pendulum-v1", num_envs=4, num_steps=64, lr=1e12, max_grad_norm=1e30,
                  anneal_lr=False)
    config = PPOConfig(total_timesteps=8 * 256, **kwargs)
    # Both runs optimized (conftest.OPTIMIZED): unoptimized, the two scan lengths round apart.
    result = jax.jit(make_train(config), compiler_options=OPTIMIZED)(jax.random.key(0))
    first = int(result.state.first_nonfinite)
    assert 0 <= first < config.num_updates
    flags = np.asarray(result.metrics["nonfinite"])
    assert not flags[:first].any() and flags[first]
    for leaf in jax.tree.leaves(result.params):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    # The frozen parameters are exactly those after the last finite update (this key's run
    # has one finite update first, so that there is a last finite update to compare with).
    assert first > 0
    shorter = jax.jit(make_train(PPOConfig(total_timesteps=first * 256, **kwargs)),
                      compiler_options=OPTIMIZED)(jax.random.key(0))
    for a, b in zip(jax.tree.leaves(shorter.params), jax.tree.leaves(result.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_healthy_run_reports_no_nonfinite(cartpole_tiny):
    _, _, result = cartpole_tiny
    assert int(result.state.first_nonfinite) == -1
    assert not np.asarray(result.metrics["nonfinite"]).any()



def _cpu_has_avx512() -> bool:
    try:
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not _cpu_has_avx512(), reason="the recorded run's bits are XLA:CPU's AVX-512 "
                    "kernels'; an AVX2-only CPU rounds differently (the next test compares to "
                    "rounding there)")
def test_default_run_is_bit_identical_to_the_recorded_one(monkeypatch):
    """The default CartPole-v1 run with key 0, its MLPs built from flax's ``nn.Dense``: final
    parameters and every metric equal, bit for bit, those recorded before the library's redesign
    (tests/data, written by this code's predecessor), so the redesign changed no arithmetic.
    (The library's own ``networks.Dense`` orders the weight gradients' sums differently: the next
    test.) Floats are XLA:CPU's on an x86-64 CPU with AVX-512, where it was recorded."""
    import flax.linen as nn

    from purejaxppo import networks
    monkeypatch.setattr(networks, "Dense", nn.Dense)
    golden = np.load(GOLDEN)
    result = jax.jit(make_train(PPOConfig()), compiler_options=USERS_XLA)(jax.random.key(0))
    leaves = jax.tree_util.tree_flatten_with_path(result.params)[0]
    assert len(leaves) == sum(k.startswith("params") for k in golden.files)
    for path, leaf in leaves:
        np.testing.assert_array_equal(leaf, golden["params" + jax.tree_util.keystr(path)])
    recorded = {k.split("/", 1)[1] for k in golden.files if k.startswith("metrics/")}
    assert set(result.metrics) <= recorded  # the redesign dropped only the always-zero columns
    for name, value in result.metrics.items():
        np.testing.assert_array_equal(value, golden["metrics/" + name], err_msg=name)


def test_default_run_starts_as_the_recorded_one_up_to_rounding():
    """With the library's ``networks.Dense`` (a backward pass arranged for XLA:CPU, same values
    up to float rounding) the default run's first updates match the recorded run's to rounding;
    rounding differences then grow as in any chaotic training run, so only those are compared
    (the run's first 2 updates: ``make_train`` is ``make_init`` then ``make_run``, whose chunks
    equal one long scan bit for bit)."""
    golden = np.load(GOLDEN)
    config = PPOConfig()
    init, run = make_init(config), make_run(config)
    hp = config.hyperparams()
    _, metrics = jax.jit(lambda key: run(init(key, hp), hp, 2))(jax.random.key(0))
    compared = 0
    for name, value in metrics.items():
        value, recorded = np.asarray(value)[:2], golden["metrics/" + name][:2]
        np.testing.assert_allclose(value, recorded, rtol=1e-4, atol=1e-6, err_msg=name)
        compared += bool(np.any(np.asarray(recorded) != 0))
    assert compared >= 5


def test_annealed_learning_rate_never_goes_below_zero_past_num_updates(tiny):
    """``make_run`` composed past ``num_updates``: lr reaches lr / num_updates at the last update
    and then stays at 0, instead of turning negative (gradient ascent)."""
    from purejaxppo import make_init, make_run

    hp = tiny.hyperparams()
    state = make_init(tiny)(jax.random.key(0), hp)
    run = jax.jit(make_run(tiny), static_argnums=2)
    _, metrics = run(state, hp, tiny.num_updates + 3)
    lr = np.asarray(metrics["learning_rate"])
    n = tiny.num_updates
    np.testing.assert_allclose(lr[n - 1], tiny.lr / n, rtol=1e-6)
    np.testing.assert_array_equal(lr[n:], 0.0)
    assert (lr >= 0).all()


def test_episode_metrics_are_nan_until_the_first_episode_finishes():
    """Pendulum's episodes last 200 steps: with 64 steps a rollout, updates 1-3 finish none."""
    config = PPOConfig(env="Pendulum-v1", total_timesteps=8 * 128, num_envs=2, num_steps=64)
    result = jax.jit(make_train(config))(jax.random.key(0))
    ret = np.asarray(result.metrics["episode_return"])
    length = np.asarray(result.metrics["episode_length"])
    assert np.isnan(ret[:3]).all() and np.isnan(length[:3]).all()
    assert np.isfinite(ret[3:]).all() and (length[3:] == 200).all()


def test_custom_networks_plug_in(tiny):
    """Any flax modules returning a distribution and a value train through make_train."""
    import flax.linen as nn

    from purejaxppo.distributions import Categorical
    from purejaxppo.networks import Networks

    class TinyActor(nn.Module):
        @nn.compact
        def __call__(self, obs):
            return Categorical(nn.Dense(2)(nn.tanh(nn.Dense(16)(obs))))

    class TinyCritic(nn.Module):
        @nn.compact
        def __call__(self, obs):
            return nn.Dense(1)(nn.tanh(nn.Dense(16)(obs)))[..., 0]

    nets = Networks(actor=TinyActor(), critic=TinyCritic())
    result = jax.jit(make_train(tiny, networks=nets))(jax.random.key(0))
    assert result.params["actor"]["params"]["Dense_1"]["kernel"].shape == (4, 16)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in result.metrics.values())
    act = policy(tiny, networks=nets)
    assert act(result.params, jnp.zeros((3, 4)), deterministic=True).shape == (3,)
    with pytest.raises(ValueError, match="Networks"):
        make_train(tiny, networks=(TinyActor(), TinyCritic()))


RECURRENT_TINY = dict(TINY, hidden_sizes=(16,), total_timesteps=1024)


@pytest.fixture(scope="module")
def gru_tiny():
    config = PPOConfig(network="gru", **RECURRENT_TINY)
    train = jax.jit(make_train(config))
    return config, train, train(jax.random.key(0))


def test_recurrent_runs_are_deterministic_and_vmapped_seed_equals_single_run(gru_tiny):
    config, train, _ = gru_tiny
    keys = jax.random.split(jax.random.key(5), 2)
    batched = jax.jit(jax.vmap(make_train(config)))(keys)
    for i in range(2):
        single, again = train(keys[i]), train(keys[i])
        for a, b, c in zip(jax.tree.leaves((single.params, single.state.env_carry, single.metrics)),
                           jax.tree.leaves((again.params, again.state.env_carry, again.metrics)),
                           jax.tree.leaves((batched.params, batched.state.env_carry,
                                            batched.metrics)), strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a, c[i], rtol=2e-5, atol=1e-6)
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in single.metrics.values())
    # The hidden state is part of the train state: a resumed run continues the episodes' memory.
    hidden = single.state.env_carry.recurrent.hidden
    assert jax.tree.leaves(hidden)[0].shape == (config.num_envs, 16)
    assert float(jnp.abs(jax.tree.leaves(hidden)[0]).max()) > 0


def test_recurrent_policy_losses_and_trpo_train():
    """Policy losses picked in one program by a vmapped index (the clipped surrogate, and
    kl_penalty, which adapts its coefficient) train an LSTM, and TRPO a GRU, with finite metrics.
    (Every loss reaches the recurrent networks through the same ``ppo_objective``.)"""
    config = PPOConfig(network="lstm", **RECURRENT_TINY)
    names = ("ppo_clip", "kl_penalty")
    train = make_train(config, policy_losses=names)
    results = jax.jit(jax.vmap(train, in_axes=(None, None, 0)))(
        jax.random.key(0), None, jnp.arange(len(names)))
    for name, value in results.metrics.items():
        assert bool(jnp.all(jnp.isfinite(value))), name
    beta = np.asarray(results.metrics["kl_beta"][names.index("kl_penalty")])
    assert len(set(beta.tolist())) > 1
    assert (np.asarray(results.metrics["approx_kl"]).max(axis=1) > 0).all()  # every loss learns

    trpo_config = config.replace(update_rule="trpo", network="gru")
    trpo = jax.jit(make_train(trpo_config))(jax.random.key(0))
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in trpo.metrics.values())
    assert float(jnp.max(trpo.metrics["trpo_kl"])) > 0  # steps were accepted
    assert float(jnp.max(trpo.metrics["trpo_kl"])) <= config.max_kl * 1.0001


def test_recurrent_policy_takes_and_returns_its_carry(gru_tiny):
    from purejaxppo import initial_carry

    config, _, result = gru_tiny
    params = result.params
    act = jax.jit(policy(config), static_argnames="deterministic")
    carry = initial_carry(config, (3,))
    assert jax.tree.leaves(carry)[0].shape == (3, 16)
    obs = jnp.array([[0.0, 0.0, 0.05, 0.0]] * 3)
    carry1, a1 = act(params, carry, obs, jax.random.key(1))
    assert a1.shape == (3,) and not np.array_equal(carry1["actor"], carry["actor"])
    # The same observation after another history: the carry changes the policy.
    _, first = policy(config)(params, carry, obs, deterministic=True)
    logits = [netlib.policy_step(make_agent(config).nets, params, c, obs,
                                 jnp.zeros(3, bool))[1].logits for c in (carry, carry1)]
    assert not np.allclose(logits[0], logits[1])
    assert first.shape == (3,)


def test_cpu_vendor_reads_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n")
    assert cpu_vendor(str(info)) == "GenuineIntel"
    info.write_text("processor\t: 0\n")
    assert cpu_vendor(str(info)) is None
    assert cpu_vendor(str(tmp_path / "missing")) is None


def test_loss_index_out_of_range_is_refused_or_clamped_consistently():
    """A concrete index outside the losses (or not an integer, or without policy_losses) is a
    ValueError; a traced one is clamped once, so the loss and its KL coefficient agree."""
    config = PPOConfig(**{**TINY, "total_timesteps": 512})
    names = ("ppo_clip", "kl_penalty")
    train = make_train(config, policy_losses=names)
    for bad, words in ((5, "loss_index=5 is out of range"), (-1, "loss_index=-1 is out of range"),
                       (1.5, "loss_index must be an integer")):
        with pytest.raises(ValueError, match=words):
            train(jax.random.key(0), None, bad)
    with pytest.raises(ValueError, match="loss_index picks among policy_losses"):
        make_train(config)(jax.random.key(0), None, 1)
    runs = jax.jit(jax.vmap(train, in_axes=(None, None, 0)))(jax.random.key(0), None,
                                                             jnp.array([1, 5]))
    for leaf in jax.tree.leaves((runs.params, runs.state.opt_state.kl_beta)):
        np.testing.assert_array_equal(leaf[0], leaf[1])
    assert float(runs.state.opt_state.kl_beta[0]) != 1.0  # kl_penalty's coefficient adapted


def test_make_run_refuses_a_length_or_start_that_is_not_a_count():
    config = PPOConfig(**TINY)
    run = make_run(config)
    state = make_init(config)(jax.random.key(0))
    hp = config.hyperparams()
    for bad in (2.5, -1, True):
        with pytest.raises(ValueError, match=rf"num_updates={bad!r} is invalid"):
            run(state, hp, bad)
    with pytest.raises(ValueError, match=r"first_update=-5 is invalid"):
        run(state, hp, 1, None, -5)


def test_hparams_of_another_type_and_params_of_another_config_are_refused():
    """Before: a dict of hyperparameters failed on an attribute deep inside the trace, and the
    params of another config (other hidden sizes, another environment) in a matrix product."""
    config = PPOConfig(**TINY)
    with pytest.raises(TypeError, match=r"hparams must be a purejaxppo.Hyperparams, got dict"):
        make_train(config)(jax.random.key(0), {"lr": 1e-3})
    hp = config.hyperparams()
    state = make_init(config)(jax.random.key(0))
    with pytest.raises(TypeError, match="got dict"):
        make_run(config)(state, hp._asdict(), 1)
    wider = PPOConfig(**{**TINY, "hidden_sizes": (32, 32)})
    with pytest.raises(ValueError, match=r"state.params\['actor'\].* has shape \(64,\), this "
                                         r"config's networks expect \(32,\): was the state "
                                         r"made with another config"):
        make_run(wider)(state, hp, 1)
    acrobot = PPOConfig(**{**TINY, "env": "Acrobot-v1"})
    with pytest.raises(ValueError, match=r"expect \(6, 64\)"):
        make_run(acrobot)(state, hp, 1)
    deeper = PPOConfig(**{**TINY, "hidden_sizes": (64, 64, 64)})
    with pytest.raises(ValueError, match="another structure"):
        make_run(deeper)(state, hp, 1)
    # The matching config runs, under jit and vmap as before.
    keys = jax.random.split(jax.random.key(1), 2)
    states = jax.vmap(make_init(config))(keys)
    run = make_run(config)
    out, _ = jax.jit(jax.vmap(lambda s: run(s, hp, 1)))(states)
    assert out.updates_done.tolist() == [1, 1]


@pytest.mark.parametrize("extra", [{}, {"update_rule": "trpo"}])
def test_params_held_in_a_flax_frozendict_train_as_a_dict_does(extra):
    """Before: Adam's moments (made from a dict) were not matched to FrozenDict params and the
    optimizer failed with a TypeError; TRPO handed back a dict, which the guard's cond refused."""
    from flax.core import FrozenDict

    config = PPOConfig(**TINY, **extra)
    hp = config.hyperparams()
    state = make_init(config)(jax.random.key(0))
    frozen = state._replace(params=FrozenDict(state.params))
    run = make_run(config)
    out, metrics = run(frozen, hp, 2)
    plain, plain_metrics = run(state, hp, 2)
    assert isinstance(out.params, FrozenDict)
    assert isinstance(plain.params, dict) and not isinstance(plain.params, FrozenDict)
    for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(plain.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(jax.tree.leaves(out.params)[0]),
                              np.asarray(jax.tree.leaves(frozen.params)[0]))
    np.testing.assert_array_equal(np.asarray(metrics["policy_loss"]),
                                  np.asarray(plain_metrics["policy_loss"]))


def test_hparams_must_be_scalars_in_their_ranges_and_the_state_this_configs():
    """Before: batched hyperparameters without the vmap failed deep in a product (or, of shape
    (1,), trained with a metric of the wrong shape), a negative learning rate trained backwards,
    and the state of another num_envs or update rule failed on a reshape or an attribute."""
    config = PPOConfig(**TINY)
    train = make_train(config)
    hp = config.hyperparams()
    batched = jax.tree.map(lambda x: jnp.full(3, x), hp)
    for bad in (batched, hp._replace(lr=jnp.ones(1))):
        with pytest.raises(ValueError, match=r"hparams.lr has shape \((3|1),\): .* "
                                             r"jax.vmap\(train, in_axes=\(None, 0\)\)"):
            jax.jit(train)(jax.random.key(0), bad)
    for field, value, allowed in (("lr", -1.0, "must be > 0"), ("gamma", 2.0, "in (0, 1]"),
                                  ("clip_eps", float("nan"), "in (0, 1)")):
        with pytest.raises(ValueError, match=rf"hparams.{field}=.* is invalid: must") as error:
            make_init(config)(jax.random.key(0), hp._replace(**{field: jnp.float32(value)}))
        assert allowed in str(error.value)
    # Traced values cannot be checked, and valid batched ones train as before.
    three = jax.jit(jax.vmap(train, in_axes=(None, 0)))(jax.random.key(0), batched)
    assert three.metrics["episode_return"].shape == (3, config.num_updates)

    state = make_init(config)(jax.random.key(0))
    more_envs = PPOConfig(**{**TINY, "num_envs": 8})
    with pytest.raises(ValueError, match=r"state.env_carry holds observations of shape \(4, 4\), "
                                         r"this config's environments \(8, 4\)"):
        make_run(more_envs)(state, hp, 1)
    trpo = PPOConfig(**{**TINY, "update_rule": "trpo"})
    with pytest.raises(ValueError, match=r"not the optimiser state of update_rule='trpo'"):
        make_run(trpo)(state, hp, 1)
    with pytest.raises(ValueError, match=r"not the optimiser state of update_rule='ppo'"):
        make_run(config)(make_init(trpo)(jax.random.key(0)), hp, 1)


@pytest.mark.parametrize("config", ["CartPole-v1", {"env": "CartPole-v1"}, None])
def test_a_config_that_is_not_a_ppoconfig_is_named(config):
    from purejaxppo import gradient_agreement, sweep

    for fn in (make_train, make_init, policy, lambda c: sweep(c, seeds=1),
               lambda c: gradient_agreement(c, jax.random.key(0))):
        with pytest.raises(TypeError, match=r"config must be a purejaxppo.PPOConfig, got "
                                            rf"{type(config).__name__}") as error:
            fn(config)
        assert "PPOConfig(" in str(error.value) and "\n" not in str(error.value)


def test_minibatches_of_one_transition_still_move_the_policy():
    """With norm_adv, one advantage used to normalise to 0: no policy gradient at all."""
    config = PPOConfig(num_envs=4, num_steps=16, num_minibatches=64, total_timesteps=640,
                       ent_coef=0.0)
    metrics = jax.jit(make_train(config))(jax.random.key(0)).metrics
    assert np.abs(np.asarray(metrics["policy_loss"])).max() > 1e-3
    assert np.asarray(metrics["approx_kl"]).max() > 0

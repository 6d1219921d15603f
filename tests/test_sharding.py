"""Several devices: sharded sweeps equal unsharded ones; a data-parallel run equals one device's.

XLA's device count is fixed when jax starts, so each check runs a small script in a fresh Python
with ``--xla_force_host_platform_device_count=4`` (and a timeout, so that a hang fails the test).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import SUITE_XLA_FLAGS

DEVICES = 4
TIMEOUT_S = 300

PRELUDE = f"""
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count={DEVICES} {SUITE_XLA_FLAGS}"
import warnings
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P
from purejaxppo import PPOConfig, make_train_data_parallel, sweep
assert jax.device_count() == {DEVICES}, jax.devices()

def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)

def replicated(x):
    shards = [np.asarray(s.data) for s in x.addressable_shards]
    return len(shards) == {DEVICES} and all(np.array_equal(shards[0], s) for s in shards)
"""


def run_script(body: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_sharded_sweep_equals_unsharded_sweep_and_vmapped_init_does_not_deadlock():
    out = run_script("""
        # Regression: a vmapped orthogonal init (batched QR) deadlocked XLA:CPU's thread pool on
        # 2 cores, for 256 seeds on one device and for 2 seeds per device under jit shardings.
        from jax.sharding import NamedSharding
        from purejaxppo import make_init
        init = make_init(PPOConfig())
        keys = jax.random.split(jax.random.key(0), 256)
        states = jax.block_until_ready(jax.jit(jax.vmap(init))(keys))
        single = jax.jit(init)(keys[255])
        for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(states.params)):
            np.testing.assert_array_equal(a, b[255])
        sharding = NamedSharding(Mesh(np.asarray(jax.devices()), ("d",)), P("d"))
        sharded = jax.jit(jax.vmap(init), in_shardings=sharding, out_shardings=sharding)
        jax.block_until_ready(sharded(jax.device_put(keys[:8], sharding)))

        # 16 runs, 4 per device.
        config = PPOConfig(total_timesteps=1024, num_envs=4, num_steps=64, update_epochs=2,
                           num_minibatches=2)
        grid = {"clip_eps": [0.1, 0.2], "ent_coef": [0.0, 0.01]}
        keys = jax.random.split(jax.random.key(7), 4)
        sharded = sweep(config, seeds=keys, grid=grid)
        assert len(sharded.result.metrics["episode_return"].sharding.device_set) == 4
        one = sweep(config, seeds=keys, grid=grid, mesh=Mesh(np.asarray(jax.devices()[:1]), ("b",)))
        assert_trees_close((sharded.result.params, sharded.result.metrics),
                           (one.result.params, one.result.metrics))
        np.testing.assert_allclose(sharded.final_returns(), one.final_returns(), rtol=1e-5)

        try:
            sweep(config, seeds=3, mesh=Mesh(np.asarray(jax.devices()), ("b",)))
        except ValueError as e:
            expected = "3 runs (grid points x seeds) cannot be split evenly over the 4 devices"
            assert expected in str(e), e
        else:
            raise AssertionError("expected a ValueError for 3 runs on 4 devices")
        from purejaxppo.sweeps import choose_mesh
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert choose_mesh(6, None).size == 3
            assert choose_mesh(7, None) is None
        assert "running on 3 of them" in str(caught[0].message)
        assert "running on one device" in str(caught[1].message)
        assert choose_mesh(8, None).size == 4
        keys6 = jax.random.split(jax.random.key(8), 6)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            six = sweep(config, seeds=keys6)  # 6 runs on 3 of the 4 devices
        assert len(six.result.metrics["episode_return"].sharding.device_set) == 3
        np.testing.assert_array_equal(six.result.metrics["env_steps"][0],
                                      np.arange(1, config.num_updates + 1) * config.batch_size)
        print("OK")
    """)
    assert "OK" in out


def test_data_parallel_run_equals_the_single_device_run_and_stays_replicated():
    out = run_script("""
        from purejaxppo import make_train

        # Normalisation on, advantages normalised per minibatch: every cross-device statistic
        # (minibatch gradient, advantage mean/std, running obs/return stats) is exercised.
        config = PPOConfig(total_timesteps=1024, num_envs=8, num_steps=32, update_epochs=2,
                           num_minibatches=2, normalize_obs=True, normalize_reward=True)
        mesh = Mesh(np.asarray(jax.devices()), ("data",))
        result = jax.jit(make_train_data_parallel(config, mesh))(jax.random.key(0))
        single = jax.jit(make_train(config))(jax.random.key(0))
        # The same computation partitioned by jit: equal up to the order of float sums.
        assert_trees_close((result.params, result.metrics), (single.params, single.metrics),
                           rtol=2e-4, atol=2e-5)
        for leaf in jax.tree.leaves((result.params, result.state.env_carry.normalizer.obs,
                                     result.state.env_carry.normalizer.ret)):
            assert replicated(leaf)
        assert result.state.env_carry.obs.sharding.spec[0] == "data"
        assert len(result.state.env_carry.obs.sharding.device_set) == 4
        np.testing.assert_array_equal(result.metrics["env_steps"],
                                      np.arange(1, config.num_updates + 1) * config.batch_size)
        try:
            make_train_data_parallel(config.replace(num_envs=6), mesh)
        except ValueError as e:
            assert "num_envs=6" in str(e), e
        else:
            raise AssertionError("expected a ValueError for 6 envs on 4 devices")
        print("OK")
    """)
    assert "OK" in out


def test_recurrent_data_parallel_run_equals_one_device():
    """A GRU's hidden states split with their environments over the devices, and whole sequences
    are shuffled across them: the run equals the one-device run."""
    out = run_script("""
        from purejaxppo import make_train

        config = PPOConfig(network="gru", hidden_sizes=(16,), total_timesteps=512, num_envs=8,
                           num_steps=16, update_epochs=2, num_minibatches=2)
        mesh = Mesh(np.asarray(jax.devices()), ("data",))
        result = jax.jit(make_train_data_parallel(config, mesh))(jax.random.key(0))
        single = jax.jit(make_train(config))(jax.random.key(0))
        assert_trees_close((result.params, result.metrics), (single.params, single.metrics),
                           rtol=2e-4, atol=2e-5)
        assert result.state.env_carry.recurrent.hidden["actor"].sharding.spec[0] == "data"
        print("OK")
    """)
    assert "OK" in out


FRESH_PRELUDE = """
def assert_raises(fn, error, text):
    try:
        fn()
    except error as e:
        assert text in str(e), e
    else:
        raise AssertionError(f"expected {error.__name__} mentioning {text!r}")
"""


def run_fresh(body: str) -> None:
    """``body`` in a fresh Python with no device flags (JAX's default: one CPU device); it must
    print ``ok``. ``assert_raises(fn, error, text)`` is defined for it."""
    env = {**os.environ, "XLA_FLAGS": SUITE_XLA_FLAGS, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", FRESH_PRELUDE + textwrap.dedent(body)], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def test_use_cpu_cores_makes_cpu_devices_that_sweeps_split_runs_over():
    run_fresh("""
        import jax
        import jax._src.xla_bridge as xb
        import purejaxppo
        from purejaxppo import PPOConfig, sweep
        from purejaxppo.parallel import seed_sharding, use_cpu_cores
        # Importing the package runs nothing on a device, so the devices can still be chosen.
        assert not xb.backends_are_initialized()
        assert use_cpu_cores(3) == 3 and jax.device_count() == 3
        assert use_cpu_cores(3) == 3  # asking again for the same count is fine
        assert_raises(lambda: use_cpu_cores(2), RuntimeError, "before JAX runs anything")
        assert seed_sharding(6).mesh.size == 3 and seed_sharding(4).mesh.size == 2
        assert seed_sharding(5) is None
        config = PPOConfig(total_timesteps=2 * 512)
        result = sweep(config, seeds=3)
        sharding = result.result.metrics["episode_return"].sharding
        assert len(sharding.device_set) == 3, sharding
        print("ok")
    """)


def test_use_cpu_cores_refuses_a_conflicting_xla_flag():
    run_fresh("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        from purejaxppo.parallel import use_cpu_cores
        assert use_cpu_cores(2) == 2
        assert_raises(lambda: use_cpu_cores(3), RuntimeError, "XLA_FLAGS")
        assert_raises(lambda: use_cpu_cores(0), ValueError, "count=0")
        print("ok")
    """)


def test_usable_cores_respects_a_cgroup_quota(monkeypatch):
    from purejaxppo import parallel

    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: set(range(64)),
                        raising=False)
    monkeypatch.setattr(parallel, "_cgroup_cpu_quota", lambda: 2)
    assert parallel.usable_cores() == 2
    monkeypatch.setattr(parallel, "_cgroup_cpu_quota", lambda: None)
    assert parallel.usable_cores() == 64
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(parallel, "_cgroup_cpu_quota", lambda: 8)
    assert parallel.usable_cores() == 1


def test_cgroup_cpu_quota_files(tmp_path):
    from purejaxppo.parallel import _cgroup_cpu_quota

    assert _cgroup_cpu_quota(str(tmp_path)) is None  # no cgroup files: no limit
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_cpu_quota(str(tmp_path)) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: 2 cores to run on
    assert _cgroup_cpu_quota(str(tmp_path)) == 2
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_cpu_quota(str(tmp_path)) == 4
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cgroup_cpu_quota(str(tmp_path)) is None


def test_runs_train_in_groups_per_device_and_equal_one_vmap():
    out = run_script("""
        from purejaxppo.parallel import runs_per_batch
        from purejaxppo.sweeps import runs_program, train_runs
        assert runs_per_batch() == 8  # four CPU devices: one per core
        config = PPOConfig(total_timesteps=1024, num_envs=4, num_steps=64, update_epochs=2,
                           num_minibatches=2)
        n = 24  # 6 runs per device
        keys = jax.random.split(jax.random.key(3), n)
        hparams = jax.tree.map(lambda v: np.full(n, v, np.float32), config.hyperparams())
        hparams = hparams._replace(lr=np.linspace(1e-4, 1e-3, n).astype(np.float32))
        whole = train_runs(config, keys, hparams, batch_size=6)
        assert len(whole.metrics["episode_return"].sharding.device_set) == 4
        # Groups of 3 (batch size 4: group_size's divisor of 6) and of 1 per device. (Groups of
        # 2 make the program whose structure is checked below.)
        for size in (4, 1):
            grouped = train_runs(config, keys, hparams, batch_size=size)
            assert len(grouped.metrics["episode_return"].sharding.device_set) == 4
            assert_trees_close((grouped.params, grouped.metrics), (whole.params, whole.metrics))
        # Each device loops over its own groups: a scan of 3 groups of 2 inside the shard_map.
        impl = jax.random.key_impl(keys)
        text = str(jax.make_jaxpr(runs_program(config, n, impl, batch_size=2))(
            np.asarray(jax.random.key_data(keys)), hparams, None))
        assert "shard_map" in text and "length=3" in text, text[:2000]
        text = str(jax.make_jaxpr(runs_program(config, n, impl, batch_size=6))(
            np.asarray(jax.random.key_data(keys)), hparams, None))
        assert "length=3" not in text
        print("OK")
    """)
    assert "OK" in out


def test_group_size_and_vmap_in_batches():
    import jax
    import jax.numpy as jnp
    import numpy as np
    import pytest

    from purejaxppo.parallel import group_of, group_size, runs_per_batch, vmap_in_batches

    assert group_size(32, 8) == 8 and group_size(30, 8) == 6 and group_size(6, 8) == 6
    assert group_size(9, 8) == 7  # no divisor in [4, 8]; 8 would leave one run unbatched
    assert group_size(7, 3) == 3  # no divisor of 7 in [2, 3], every size leaves one: 3, 3, 1
    assert [group_of(i, 9, 8) for i in range(9)] == [7] * 7 + [2, 2]
    assert group_of(5, 30, 8) == 6 and group_of(5, 6, 8) == 6 and group_of(3, 30, None) == 30
    assert runs_per_batch("cpu", 2) == 8
    assert runs_per_batch("cpu", 1) is None and runs_per_batch("gpu", 8) is None

    def f(w, x):  # a product per run, so that grouping is visible in the program
        return jnp.tanh(x @ w), {"sum": (w * x[0]).sum()}

    w = jax.random.normal(jax.random.key(0), (7, 5, 5))
    x = jax.random.normal(jax.random.key(1), (7, 3, 5))
    want = jax.vmap(f)(w, x)
    for size in (None, 1, 2, 3, 7, 9):
        got = jax.jit(vmap_in_batches(f, size))(w, x)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert "scan" in str(jax.make_jaxpr(vmap_in_batches(f, 3))(w, x))
    assert "scan" not in str(jax.make_jaxpr(vmap_in_batches(f, 7))(w, x))
    with pytest.raises(ValueError, match="batch_size=0"):
        vmap_in_batches(f, 0)

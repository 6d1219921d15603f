"""Two processes on JAX's distributed runtime (127.0.0.1, gloo collectives, 2 CPU devices each):
``sweep`` and ``make_train_data_parallel`` run unchanged and equal a one-process run on 4 devices.

Each process runs :data:`SCRIPT` in a fresh Python, bounded by a timeout; the one-process
reference runs the same script at the same time with 4 devices of its own.
"""

from __future__ import annotations

import sys

import numpy as np
from processes import Group, cpu_environment, free_port

TIMEOUT_S = 240

SCRIPT = """
import sys
mode, port, out = sys.argv[1], sys.argv[2], sys.argv[3]
import jax
if mode == "single":
    jax.config.update("jax_num_cpu_devices", 4)
    pid = 0
else:
    pid = int(mode)
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=pid, initialization_timeout=60)
import numpy as np
from purejaxppo import PPOConfig, make_train_data_parallel, sweep
from purejaxppo.parallel import device_mesh
from purejaxppo.sweeps import to_host

assert jax.device_count() == 4 and jax.local_device_count() == (4 if mode == "single" else 2)
config = PPOConfig(total_timesteps=1024, num_envs=4, num_steps=64, update_epochs=2,
                   num_minibatches=2)
# 2 points x 2 seeds = 4 runs, one per device of the 2 x 2 (or 1 x 4) devices.
result = sweep(config, seeds=2, grid={"lr": [1e-3, 3e-4]})
sweep_params = [to_host(x) for x in jax.tree.leaves(result.result.params)]
assert sweep_params[0].shape[:2] == (2, 2)
saved = {f"sweep_{i}": x for i, x in enumerate(sweep_params)}
saved["table"] = np.asarray([[r["lr"], r["seed"], r["final_return"]] for r in result.table()])

dp = jax.jit(make_train_data_parallel(config.replace(normalize_obs=True), device_mesh()))(
    jax.random.key(3))
for i, leaf in enumerate(jax.tree.leaves(dp.state.params)):
    shards = [np.asarray(s.data) for s in leaf.addressable_shards]
    assert all(np.array_equal(shards[0], s) for s in shards[1:])  # replicated on this process
    saved[f"dp_{i}"] = shards[0]
np.savez(f"{out}/{mode}.npz", **saved)
print("ok", flush=True)
"""


def test_sweep_and_data_parallel_over_two_processes_equal_one_process(tmp_path):
    port = free_port()
    modes = ["0", "1", "single"]
    commands = [[sys.executable, "-c", SCRIPT, m, str(port), str(tmp_path)] for m in modes]
    with Group(commands, [cpu_environment()] * 3, tmp_path / "logs") as group:
        results = group.wait(TIMEOUT_S)
    for r in results:
        assert r.code == 0 and r.out.strip().splitlines()[-1] == "ok", r
    got = [dict(np.load(tmp_path / f"{m}.npz")) for m in modes]
    assert got[0].keys() == got[2].keys() and any(k.startswith("dp_") for k in got[0])
    for key in got[0]:
        # Both processes hold the same gathered table and parameters: bit for bit.
        np.testing.assert_array_equal(got[0][key], got[1][key], err_msg=key)
        # And equal the one-process run (float32 tolerance: other reduction orders).
        np.testing.assert_allclose(got[0][key], got[2][key], rtol=1e-5, atol=1e-6, err_msg=key)
    table = got[0]["table"]
    assert table.shape == (4, 3) and np.isfinite(table[:, 2]).all()
    # The two learning rates differ, so a swapped or broadcast gather would be caught.
    assert not np.array_equal(got[0]["sweep_0"][0], got[0]["sweep_0"][1])

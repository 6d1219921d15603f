"""Determinism across processes and jax_enable_x64."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import hashlib, json, jax, numpy as np
from purejaxppo import PPOConfig, make_train
out = {}
for env in ["CartPole-v1", "Pendulum-v1"]:
    c = PPOConfig(env=env, total_timesteps=1024, num_envs=4, num_steps=64, update_epochs=2,
                  num_minibatches=2, normalize_obs=True, normalize_reward=True)
    r = jax.jit(make_train(c))(jax.random.key(3))
    leaves = jax.tree.leaves((r.params, r.metrics))
    digest = hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in leaves)).hexdigest()
    dtypes = sorted({str(np.asarray(x).dtype) for x in jax.tree.leaves(r.params)})
    # Pendulum's 200-step episodes do not end within 256 steps per env: its episode metrics
    # are NaN by definition; everything else must be finite.
    checked = jax.tree.leaves((r.params, {k: v for k, v in r.metrics.items()
                                          if not k.startswith("episode_")}))
    finite = all(bool(np.isfinite(np.asarray(x)).all()) for x in checked)
    out[env] = {"digest": digest, "dtypes": dtypes, "finite": finite}
print(json.dumps(out))
"""


def run_script(**env_vars: str) -> dict:
    env = {**os.environ, **env_vars}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bit_identical_across_processes_and_float32_under_x64(tmp_path):
    """Two processes give the same bits; with ``jax_enable_x64`` training stays float32 and
    finite. (Not the same bits under x64: gymnax's environments then draw and step in float64,
    so the episodes themselves differ.)"""
    # The second process reads the first one's compiled programs from the compilation cache:
    # the same executables, so any difference comes from the run itself (its keys, its state).
    cache = str(tmp_path / "xla-cache")
    first = run_script(JAX_ENABLE_X64="0", JAX_COMPILATION_CACHE_DIR=cache)
    second = run_script(JAX_ENABLE_X64="0", JAX_COMPILATION_CACHE_DIR=cache)
    assert first == second
    x64 = run_script(JAX_ENABLE_X64="1")
    for env, res in x64.items():
        assert res["finite"], env
        # Training stays in float32 under x64: parameters are not silently promoted.
        assert res["dtypes"] == ["float32"], res
        assert first[env]["finite"]

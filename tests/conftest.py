"""Shared fixtures: one tiny config for the whole suite (8 updates of 4 envs x 64 steps)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import pytest

from purejaxppo import PPOConfig
from purejaxppo.envs import Box, Discrete

# The suite compiles a few hundred small programs and runs each for a few updates, so its time
# is mostly XLA:CPU compiling. Two flags shorten that: LLVM -O0 for the fused kernels (compile
# time about halved against -O1; the tiny programs run slower, the suite 20% faster in all), and
# XLA:CPU's elemental emitters for fusions instead of its newer MLIR fusion emitters (compile
# time -40% on CartPole's, MinAtar's and Brax's training programs; benchmarks/NOTES.md). Every
# process of the session compiles with both, so the suite's comparisons compare like with like.
# Programs compiled with options of their own keep those: the command line's, ``sweep``'s and
# ``search``'s (``purejaxppo.parallel.compiler_options``, -O1 on AMD and Intel CPUs). Unoptimized
# code rounds unlike optimized code, and the elemental emitters round some kernels unlike a
# user's XLA: the tests of a user's bits name XLA's defaults (USERS_XLA below), and the tests
# that two programs agree to float rounding compile both at -O1 (OPTIMIZED). XLA reads XLA_FLAGS
# when JAX starts its backend, which no import above does; subprocesses inherit it. XLA aborts on
# a flag it does not know, so the first process checks the emitters' flag in a child first (a
# jaxlib without it: -O0 only).
_FLAGS_VARIABLE = "PUREJAXPPO_TESTS_XLA_FLAGS"
if _FLAGS_VARIABLE not in os.environ:
    _flags = ["--xla_backend_optimization_level=0"]
    _probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], timeout=120,
                            env={**os.environ, "JAX_PLATFORMS": "cpu",
                                 "XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false"},
                            capture_output=True)
    if _probe.returncode == 0:
        _flags.append("--xla_cpu_use_fusion_emitters=false")
    os.environ[_FLAGS_VARIABLE] = " ".join(_flags)
SUITE_XLA_FLAGS = os.environ[_FLAGS_VARIABLE]
"""The XLA flags every process of the session compiles with."""
USERS_EMITTERS = ({"xla_cpu_use_fusion_emitters": True}
                  if "--xla_cpu_use_fusion_emitters=false" in SUITE_XLA_FLAGS else {})
"""``jax.jit`` compiler options that undo the suite's choice of fusion emitters."""
USERS_XLA = {"xla_backend_optimization_level": 2, **USERS_EMITTERS}
"""``jax.jit`` compiler options for the bits a user's XLA computes: its default LLVM level (2)
and fusion emitters."""
OPTIMIZED = {"xla_backend_optimization_level": 1}
"""``jax.jit`` compiler options for the tests that two programs (vmapped and not, of different
lengths) agree to float rounding: LLVM -O1, the level ``purejaxppo.parallel.compiler_options``
gives on AMD and Intel CPUs; unoptimized code rounds more loosely than they assert."""
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), SUITE_XLA_FLAGS]).strip()

# Many tests compile a program another test (or another process: the command line's
# subprocesses, the other pytest-xdist worker) has compiled already, from a new closure that
# jax's in-memory cache cannot match: one persistent compilation cache for the whole session
# reads it back instead. The first process (pytest itself, which starts the xdist workers) makes
# a fresh folder and removes it at the end (pytest_unconfigure); the workers and every
# subprocess inherit it through the environment. A program is cached from 0.5 s of compiling.
_CACHE_VARIABLE = "PUREJAXPPO_TESTS_XLA_CACHE"
_OWN_CACHE = _CACHE_VARIABLE not in os.environ
if _OWN_CACHE:
    os.environ[_CACHE_VARIABLE] = tempfile.mkdtemp(prefix="purejaxppo-tests-xla-cache-")
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ[_CACHE_VARIABLE]
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_VARIABLE])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_unconfigure(config) -> None:
    if _OWN_CACHE:
        shutil.rmtree(os.environ[_CACHE_VARIABLE], ignore_errors=True)


def require_suite(package: str, extra: str) -> None:
    """Skips the calling test module only when ``package`` is not installed at all (the
    ``purejaxppo[extra]`` extra is missing); an installed package that fails to import fails
    the module's tests instead of skipping them."""
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"the {extra} extra is not installed", allow_module_level=True)
    importlib.import_module(package)


TINY = dict(total_timesteps=2048, num_envs=4, num_steps=64, update_epochs=2, num_minibatches=2)
"""8 updates of 4 envs x 64 steps, 2 epochs of 2 minibatches: seconds to compile and run."""
TINY_FLAGS = ["--total-timesteps", "2048", "--num-envs", "4", "--num-steps", "64",
              "--update-epochs", "2", "--num-minibatches", "2"]
"""TINY as command-line flags."""


@pytest.fixture(scope="session")
def tiny() -> PPOConfig:
    """CartPole-v1 with :data:`TINY` settings."""
    return PPOConfig(**TINY)


class Countdown:
    """A hand-made done pattern: an episode of ``length`` in 2..5 steps (drawn at reset) ends in
    a terminal state at its last step if that is at most 4, and is cut by the time limit of 4
    steps otherwise (a truncation). The observation is noise and the step count."""

    observation_space = Box.of((3,), -10.0, 10.0)
    action_space = Discrete(2)
    max_episode_steps = 4

    def reset(self, key):
        k_len, k_obs = jax.random.split(key)
        length = jax.random.randint(k_len, (), 2, 6)
        state = (jnp.int32(0), length)
        return self.observe(k_obs, state), state

    def transition(self, key, state, action):
        t, length = state
        state = (t + 1, length)
        return self.observe(key, state), state, 1.0, t + 1 == length, False

    def observe(self, key, state):
        return jnp.concatenate([jax.random.normal(key, (2,)), state[0][None] / 4.0])


def recurrent_rollout(network: str, num_steps: int = 12, num_envs: int = 3, rollouts: int = 1):
    """``(agent, params, env carry, transitions)``: the last of ``rollouts`` jitted rollouts of
    ``Countdown-v0`` under a fresh recurrent ``network`` (8 units)."""
    from purejaxppo import envs
    from purejaxppo.rollout import collect
    from purejaxppo.train import init_state, make_agent

    envs.register("Countdown-v0", Countdown)
    config = PPOConfig(env="Countdown-v0", network=network, hidden_sizes=(8,), num_envs=num_envs,
                       num_steps=num_steps, total_timesteps=num_envs * num_steps,
                       num_minibatches=1)
    agent = make_agent(config)
    state = init_state(agent, jax.random.key(0), config.hyperparams())
    run = jax.jit(lambda c, k: collect(agent.env, agent.nets, state.params, c, k, num_steps,
                                       jnp.float32(0.99), False, False))
    carry = state.env_carry
    for i in range(rollouts):
        carry, traj, _ = run(carry, jax.random.key(2 + i))
    return agent, state.params, carry, traj

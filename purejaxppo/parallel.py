"""Many devices: independent runs sharded over a mesh, and data parallelism within one run.

Both use ``jax.shard_map`` over a :class:`jax.sharding.Mesh` of ``jax.devices()``; with
``jax.distributed.initialize()`` called first, that list spans every host and the same code runs
multi-host. Nothing here uses ``pmap``.

* :func:`shard_runs` splits a batch of independent runs (seeds, sweep points) over the devices.
  Each device trains its slice with ``vmap``; there is no communication.
* :func:`use_cpu_cores` makes every core of a CPU host a JAX device (JAX shows one CPU device
  by default, and XLA:CPU runs one of these small programs on about one core), so the runs of a
  sweep or of the command line's seeds spread over the cores.
* :func:`compiler_options`: per-program XLA options that shorten compile time on CPU.
* :func:`make_train_data_parallel` splits the environments of *one* run over the devices. Each
  device steps its environments and computes gradients on its shard of every minibatch; gradients,
  advantage and observation/reward normalisation statistics, episode counts and diagnostics are
  averaged with ``lax.pmean``/``psum``, so the parameters stay identical on every device.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purejaxppo.config import Hyperparams, PPOConfig
from purejaxppo.rollout import EnvCarry
from purejaxppo.train import TrainResult, TrainState, init_state, make_agent, update_step

Array = jax.Array


def use_cpu_cores(count: int | None = None) -> int:
    """Makes ``count`` CPU devices (default: :func:`usable_cores`); returns the count.

    JAX's CPU backend shows one device, and XLA:CPU runs a PPO program of small matrices on
    about one core whatever the batch, so on a CPU host independent runs (seeds, sweep points)
    are faster split over one device per core: :func:`purejaxppo.sweeps.sweep` and the command
    line do that whenever there are several devices (CartPole-v1, 16 seeds on a 2-core
    CPU: 221k -> 421k env steps/s; ``benchmarks/results/throughput.md``). It sets
    ``jax_num_cpu_devices``, which must happen before JAX runs anything; call it right after
    ``import jax``. It does nothing to GPUs and TPUs, which are the devices whenever present.

    Raises:
        ValueError: if ``count < 1``.
        RuntimeError: if JAX has already run something (the CPU devices are fixed by then), or
            ``XLA_FLAGS`` already sets ``--xla_force_host_platform_device_count`` to another count.
    """
    if count is None:
        count = usable_cores()
    elif count < 1:
        raise ValueError(f"count={count} is invalid: the number of CPU devices must be >= 1")
    forced = re.search(r"--xla_force_host_platform_device_count=(\d+)",
                       os.environ.get("XLA_FLAGS", ""))
    if forced:
        if int(forced.group(1)) != count:
            raise RuntimeError(f"XLA_FLAGS sets --xla_force_host_platform_device_count="
                               f"{forced.group(1)}; remove it to use {count} CPU devices")
        return count
    if jax.config.jax_num_cpu_devices == count:
        return count
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as e:
        raise RuntimeError(f"use_cpu_cores({count}) must run before JAX runs anything (right "
                           f"after `import jax`): the CPU devices are already fixed ({e})") from None
    return count


def compiler_options(platform: str | None = None) -> dict[str, Any]:
    """Options for ``jax.jit(..., compiler_options=...)`` that compile a training program faster.

    On CPU: LLVM ``-O1`` instead of ``-O2`` for XLA's fused elementwise kernels
    (``xla_backend_optimization_level=1``). The matrix products run in library kernels the level
    does not touch, so run time does not change while compile time drops (CartPole-v1, default
    config: 5.2 -> 4.3 s for one seed, 7.0 -> 4.7 s for 16 vmapped seeds, run within noise;
    Breakout-MinAtar and Pendulum-v1 presets alike; ``benchmarks/NOTES.md``). The command line,
    :func:`purejaxppo.sweeps.sweep` and the benchmarks compile with these; pass them to your own
    ``jax.jit`` of :func:`purejaxppo.make_train` for the same effect. Elsewhere (GPU, TPU), and
    for ``platform`` other than ``"cpu"``, there are none: ``{}``.

    Args:
        platform: the platform the program runs on; by default ``jax.default_backend()``.
    """
    platform = jax.default_backend() if platform is None else platform
    return {"xla_backend_optimization_level": 1} if platform == "cpu" else {}


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota if any.

    A container limited to 2 CPUs of a 64-core host sees 64 cores in its affinity; its quota
    (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``) says 2.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, quota)) if quota else cores


def _cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> int | None:
    """The cgroup CPU limit rounded up to whole cores, or None when there is none (or no Linux)."""
    try:
        with open(os.path.join(root, "cpu.max")) as f:
            limit, period = f.read().split()[:2]
        if limit != "max":
            return -(-int(limit) // int(period))
        return None
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as f:
            limit = int(f.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
            period = int(f.read())
        return -(-limit // period) if limit > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def seed_sharding(num_runs: int) -> NamedSharding | None:
    """How to split a leading axis of ``num_runs`` independent runs over the devices.

    Uses the largest number of this process's devices that divides ``num_runs`` (a mesh named
    ``"seed"``); None when that is one device. ``jax.jit`` partitions a ``vmap`` over the runs
    along that axis by itself: each device computes its runs, with no communication except for
    values reduced over runs (a progress bar's mean return).
    """
    devices = dividing_devices(num_runs, jax.local_devices())
    if len(devices) == 1:
        return None
    return NamedSharding(Mesh(np.asarray(devices), ("seed",)), PartitionSpec("seed"))


def dividing_devices(num_runs: int, devices: list) -> list:
    """The longest prefix of ``devices`` whose length divides ``num_runs`` (at least one)."""
    n = max(d for d in range(1, len(devices) + 1) if num_runs % d == 0)
    return devices[:n]


def device_mesh(axis_name: str = "batch") -> Mesh:
    """A one-axis mesh over every device of every process (``jax.devices()``)."""
    return Mesh(np.asarray(jax.devices()), (axis_name,))


def shard_runs(fn: Callable[..., Any], mesh: Mesh) -> Callable[..., Any]:
    """``fn`` (leading batch axis on every input and output leaf) split over every mesh axis.

    Each device calls ``fn`` on its ``B / mesh.size`` runs; wrap the result in ``jax.jit``.
    """
    spec = PartitionSpec(mesh.axis_names)
    # check_vma=False: the scans' carries start as per-device constants and become per-device
    # data; nothing is communicated, so there is nothing for the check to protect.
    # (Initialising many runs per device once deadlocked XLA:CPU: see networks.init_params.)
    return jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)


def state_specs(state: TrainState, axis_name: str) -> TrainState:
    """Partition specs of a data-parallel train state: environments split, the rest replicated.

    Every leaf of ``state.env`` has a leading environment axis except the normalisation
    statistics, which are shared by all environments.
    """
    replicated = jax.tree.map(lambda _: PartitionSpec(), state)
    env: EnvCarry = jax.tree.map(lambda _: PartitionSpec(axis_name), state.env)
    normalizer = env.normalizer._replace(obs=replicated.env.normalizer.obs,
                                         ret=replicated.env.normalizer.ret)
    return replicated._replace(env=env._replace(normalizer=normalizer))


def local_config(config: PPOConfig, num_devices: int) -> PPOConfig:
    """The settings one device runs under data parallelism: ``num_envs / num_devices`` envs.

    Raises:
        ValueError: if the environments or the minibatches do not split evenly.
    """
    if config.num_envs % num_devices:
        raise ValueError(f"num_envs={config.num_envs} must be divisible by the {num_devices} "
                         "devices of the data-parallel axis")
    num_envs = config.num_envs // num_devices
    if (num_envs * config.num_steps) % config.num_minibatches:
        raise ValueError(f"each device's batch, {num_envs} envs x {config.num_steps} steps, must "
                         f"split into num_minibatches={config.num_minibatches}")
    return config.replace(num_envs=num_envs,
                          total_timesteps=config.num_updates * num_envs * config.num_steps)


def make_train_data_parallel(config: PPOConfig, mesh: Mesh, axis_name: str | None = None
                             ) -> Callable[..., TrainResult]:
    """Builds ``train(key, hparams=None) -> TrainResult`` for one run split over ``mesh``.

    The environments are split over ``axis_name`` (the mesh's first axis by default), each
    device holding ``num_envs / n`` of them; minibatches are the union of the devices' shards,
    so the global minibatch size is ``config.minibatch_size`` as on one device. Per minibatch,
    ``grad = pmean_devices(grad of the device's shard)``, which equals the gradient of the whole
    minibatch because the shards have equal size. Wrap the result in ``jax.jit``.

    The state starts exactly as a single-device run's (same parameters, same environments). The
    actions and shuffles then differ (each device folds its index into the keys), so a run is a
    different sample of the same algorithm, not a bitwise copy of the single-device run.

    Returns:
        ``train``; its ``TrainResult`` holds parameters replicated on every device, the
        environments sharded, and metrics as on one device (``explained_variance`` is the mean of
        the devices' values).
    """
    if getattr(config, "update_rule", "ppo") != "ppo":
        raise ValueError("data parallelism supports update_rule='ppo' only")
    axis = mesh.axis_names[0] if axis_name is None else axis_name
    agent = make_agent(config)
    local = make_agent(local_config(config, mesh.shape[axis]))

    def run(state: TrainState, hp: Hyperparams):
        return jax.lax.scan(lambda s, _: update_step(local, s, hp, axis_name=axis), state, None,
                            length=config.num_updates)

    def train(key: Array, hparams: Hyperparams | None = None) -> TrainResult:
        hp = config.hyperparams() if hparams is None else hparams
        hp = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), hp)
        state = init_state(agent, key, hp)
        specs = state_specs(state, axis)
        # check_vma=False: replication of the parameters is kept by the pmeans in update_step
        # (and tested), not inferred by the type system.
        state, metrics = jax.shard_map(
            run, mesh=mesh, in_specs=(specs, PartitionSpec()),
            out_specs=(specs, PartitionSpec()), check_vma=False)(state, hp)
        return TrainResult(state, metrics)

    return train

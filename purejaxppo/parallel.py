"""Many devices: independent runs sharded over a mesh, and data parallelism within one run.

Both use JAX's own partitioning over a :class:`jax.sharding.Mesh` of ``jax.devices()``
(``jax.shard_map`` for independent runs, ``jax.jit``'s partitioner for one run's environments);
with ``jax.distributed.initialize()`` called first, that list spans every host and the same code
runs multi-host. Nothing here uses ``pmap``.

* :func:`shard_runs` splits a batch of independent runs (seeds, sweep points) over the devices.
  Each device trains its slice with ``vmap``; there is no communication.
* :func:`use_cpu_cores` makes every core of a CPU host a JAX device (JAX shows one CPU device
  by default, and XLA:CPU runs one of these small programs on about one core), so the runs of a
  sweep or of the command line's seeds spread over the cores.
* :func:`in_groups` / :func:`vmap_in_batches` train a device's runs a group at a time
  (:func:`runs_per_batch`: groups of 8 on a CPU split into one device per core, whose caches
  then hold a group).
* :func:`compiler_options`: per-program XLA options that shorten compile time on x86 CPUs.
* :func:`make_train_data_parallel` splits the environments of *one* run over the devices; the
  partitioner of ``jax.jit`` adds the collectives, so the parameters are one replicated value.
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

from purejaxppo.config import Hyperparams, PPOConfig, check_config
from purejaxppo.rollout import EnvCarry
from purejaxppo.train import TrainResult, TrainState, make_init, make_update

Array = jax.Array


def use_cpu_cores(count: int | None = None) -> int:
    """Makes ``count`` CPU devices (default: :func:`usable_cores`); returns the count.

    JAX's CPU backend shows one device, and XLA:CPU runs a PPO program of small matrices on
    about one core whatever the batch, so on a CPU host independent runs (seeds, sweep points)
    are faster split over one device per core (``benchmarks/results/throughput.md``):
    :func:`purejaxppo.sweeps.sweep` and the command line do that whenever there are several
    devices. It sets
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


O1_VENDORS = ("AuthenticAMD", "GenuineIntel")
"""CPU vendors on which LLVM ``-O1`` was measured to keep run time (``benchmarks/NOTES.md``)."""


def compiler_options(platform: str | None = None, vendor: str | None = None) -> dict[str, Any]:
    """Options for ``jax.jit(..., compiler_options=...)`` that compile a training program faster
    where that costs no run time.

    On AMD and Intel CPUs: LLVM ``-O1`` instead of ``-O2`` for XLA's fused elementwise kernels
    (``xla_backend_optimization_level=1``): compile time drops by a tenth to a third, run time is
    unchanged (the products run in library kernels the level does not touch) and results are the
    same bit for bit. Paired measurements on an AMD EPYC and an Intel Xeon are in
    ``benchmarks/NOTES.md``. On other CPUs (not measured) and on GPU/TPU there are none: ``{}``.
    The command line, :func:`purejaxppo.sweeps.sweep` and the benchmarks compile with these; pass
    them to your own ``jax.jit`` of :func:`purejaxppo.make_train` for the same effect.

    Args:
        platform: the platform the program runs on; by default ``jax.default_backend()``.
        vendor: the CPU's vendor id (``AuthenticAMD``, ``GenuineIntel``, ...); by default this
            host's (:func:`cpu_vendor`).
    """
    platform = jax.default_backend() if platform is None else platform
    if platform != "cpu":
        return {}
    vendor = cpu_vendor() if vendor is None else vendor
    return {"xla_backend_optimization_level": 1} if vendor in O1_VENDORS else {}


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """This host's CPU vendor id from ``cpuinfo`` (Linux), e.g. ``AuthenticAMD``; None if unknown."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


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

    One process: the largest number of this process's devices that divides ``num_runs`` (a mesh
    named ``"seed"``); None when that is one device. Several processes
    (``jax.distributed.initialize()``): every device of every process, which all take part in
    each program. ``jax.jit`` partitions a ``vmap`` over the runs along that axis by itself: each
    device computes its runs, with no communication except for values reduced over runs (a
    progress bar's mean return). Put host values on it with :func:`put_runs`.

    Raises:
        ValueError: several processes and ``num_runs`` does not divide by ``jax.device_count()``.
    """
    if jax.process_count() > 1:
        if num_runs % jax.device_count():
            raise ValueError(f"{runs_phrase(num_runs)} cannot be split evenly over the "
                             f"{jax.device_count()} devices of {jax.process_count()} processes; "
                             f"use a multiple of {jax.device_count()}")
        return NamedSharding(Mesh(np.asarray(jax.devices()), ("seed",)), PartitionSpec("seed"))
    devices = dividing_devices(num_runs, jax.local_devices())
    if len(devices) == 1:
        return None
    return NamedSharding(Mesh(np.asarray(devices), ("seed",)), PartitionSpec("seed"))


def runs_phrase(num_runs: int) -> str:
    """``"1 run"`` or ``"N runs"``, for messages about a number of runs."""
    return f"{num_runs} run" if num_runs == 1 else f"{num_runs} runs"


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def put_runs(tree: Any, sharding: NamedSharding) -> Any:
    """``tree`` (leading run axis on every leaf, the same value on every process) on ``sharding``.

    One process: ``jax.device_put``. Several: each process builds its own devices' slices of the
    global array (``jax.make_array_from_callback``) from its copy, so nothing is sent between
    processes; typed PRNG keys travel as their key data.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(leaf: Any) -> Array:
        if _is_key(leaf):
            data = put(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def gather_runs(tree: Any) -> Any:
    """``tree`` with every leaf that spans several processes gathered whole onto this host.

    A collective: every process must call it. Leaves held whole by this process, and everything
    in a one-process run, are returned as they are; gathered leaves are numpy arrays (keys:
    key arrays on this process's default device). The inverse of :func:`put_runs`.
    """
    from jax.experimental import multihost_utils

    def gather(leaf: Any) -> Any:
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return leaf
        if _is_key(leaf):
            data = gather(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(gather, tree)


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
    return jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)


RUNS_PER_BATCH_CPU = 8
"""Runs a one-core CPU device computes side by side by default (:func:`runs_per_batch`)."""


def runs_per_batch(platform: str | None = None, devices: int | None = None) -> int | None:
    """How many independent runs a device computes side by side by default.

    :data:`RUNS_PER_BATCH_CPU` when the CPU is split into one device per core
    (:func:`use_cpu_cores`: ``platform`` ``"cpu"`` and ``devices``, the process's local device
    count, above one): a group's parameters, optimizer state and batch then stay in its core's
    caches, where a device holding more runs streams all of them through memory at every step
    (measured in ``benchmarks/NOTES.md``). None otherwise, one ``vmap`` of every run: an
    accelerator wants the widest batch, and one CPU device spanning several cores spreads the
    wider products over them (groups of 8 measured slower there).
    """
    platform = jax.default_backend() if platform is None else platform
    devices = jax.local_device_count() if devices is None else devices
    return RUNS_PER_BATCH_CPU if platform == "cpu" and devices > 1 else None


def group_size(num_runs: int, batch_size: int) -> int:
    """The size of the groups :func:`in_groups` splits ``num_runs`` runs into: ``num_runs`` when
    it is at most ``batch_size``; else the largest divisor of ``num_runs`` from
    ``ceil(batch_size / 2)`` to ``batch_size`` (equal groups, one compiled body); else the
    largest size in that range that leaves a remainder of at least two runs (a smaller group of
    its own, so no run is computed unbatched), else ``batch_size``."""
    if num_runs <= batch_size:
        return num_runs
    sizes = range(batch_size, (batch_size + 1) // 2 - 1, -1)
    for size in sizes:
        if num_runs % size == 0:
            return size
    return next((size for size in sizes if num_runs % size > 1), batch_size)


def _groups(num_runs: int, batch_size: int | None) -> tuple[int, int]:
    """``(size, whole)``: :func:`in_groups`' group size for ``num_runs`` runs and how many runs
    the equal groups hold (the rest, ``num_runs - whole``, is one smaller group)."""
    if batch_size is None or num_runs <= batch_size:
        return num_runs, num_runs
    size = group_size(num_runs, batch_size)
    return size, num_runs // size * size


def group_of(index: int, num_runs: int, batch_size: int | None) -> int:
    """How many runs are computed side by side with run ``index`` of ``num_runs`` when
    :func:`in_groups` splits them by ``batch_size`` (its group's size, or the remainder's)."""
    size, whole = _groups(num_runs, batch_size)
    return size if index < whole else num_runs - whole


def in_groups(fn: Callable[..., Any], batch_size: int | None) -> Callable[..., Any]:
    """``fn`` (a function of a batch: leading run axis on every argument and result leaf)
    computed a group of runs at a time.

    The runs are split into groups of :func:`group_size`; ``jax.lax.map`` loops over the equal
    groups, each one call of ``fn`` on its group, and a remainder is one more call.
    ``batch_size`` None, or at least the number of runs, is ``fn`` itself. For a ``fn`` whose
    runs are independent (a ``vmap``) each run's result is the same up to rounding: XLA batches a
    group's matrix products at the group's width, so the rounding follows the group size as it
    follows the number of runs on a device. Under ``jax.jit`` the arguments must not be split
    over devices (a loop over a split axis gathers it): inside ``jax.shard_map``
    (:func:`shard_runs`) each device loops over its own runs.

    Raises:
        ValueError: ``batch_size`` is not positive.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive number of runs or None")

    def grouped(*args: Any) -> Any:
        num_runs = jax.tree.leaves(args)[0].shape[0]
        size, whole = _groups(num_runs, batch_size)
        if size == num_runs:
            return fn(*args)
        head = jax.tree.map(lambda x: x[:whole].reshape(whole // size, size, *x.shape[1:]), args)
        out = jax.lax.map(lambda a: fn(*a), head)
        out = jax.tree.map(lambda x: x.reshape(whole, *x.shape[2:]), out)
        if whole == num_runs:
            return out
        rest = fn(*jax.tree.map(lambda x: x[whole:], args))
        return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, rest)

    return grouped


def vmap_in_batches(fn: Callable[..., Any], batch_size: int | None) -> Callable[..., Any]:
    """``jax.vmap(fn)`` over the leading axis of every argument, computed a group at a time:
    :func:`in_groups` of ``jax.vmap(fn)``.

    Raises:
        ValueError: ``batch_size`` is not positive.
    """
    return in_groups(jax.vmap(fn), batch_size)


def env_carry_sharding(env_carry: EnvCarry, mesh: Mesh, axis_name: str) -> EnvCarry:
    """Shardings of an environment carry: environments split over ``axis_name``; the
    normalisation statistics, shared by every environment, replicated."""
    split = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec(axis_name)), env_carry)
    replicated = NamedSharding(mesh, PartitionSpec())
    stats = jax.tree.map(lambda _: replicated, (env_carry.normalizer.obs, env_carry.normalizer.ret))
    return split._replace(normalizer=split.normalizer._replace(obs=stats[0], ret=stats[1]))


def make_train_data_parallel(config: PPOConfig, mesh: Mesh, axis_name: str | None = None
                             ) -> Callable[..., TrainResult]:
    """Builds ``train(key, hparams=None) -> TrainResult`` for one run split over ``mesh``.

    The environments are split over ``axis_name`` (the mesh's first axis by default), each
    device stepping ``num_envs / n`` of them; everything else is replicated. The program is
    :func:`purejaxppo.make_train`'s, unchanged, with the environment carry constrained to that
    sharding at every update (``jax.lax.with_sharding_constraint``): ``jax.jit``'s partitioner
    places the computation and inserts the collectives (the minibatch gradients, advantage
    normalisation and running statistics of the whole batch), so no part of the library knows
    about devices. The run is the single-device run's computation, equal to it up to the order
    of floating-point sums. Wrap the result in ``jax.jit``.

    Raises:
        ValueError: ``num_envs`` does not divide by the devices of ``axis_name``.
    """
    check_config(config)
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}: e.g. "
                        "jax.make_mesh((jax.device_count(),), ('envs',))")
    axis = mesh.axis_names[0] if axis_name is None else axis_name
    if config.num_envs % mesh.shape[axis]:
        raise ValueError(f"num_envs={config.num_envs} must be divisible by the "
                         f"{mesh.shape[axis]} devices of the data-parallel axis {axis!r}")
    init, update = make_init(config), make_update(config)

    def constrain(state: TrainState) -> TrainState:
        shardings = env_carry_sharding(state.env_carry, mesh, axis)
        return state._replace(
            env_carry=jax.lax.with_sharding_constraint(state.env_carry, shardings))

    def step(state: TrainState, hp: Hyperparams):
        state, metrics = update(constrain(state), hp)
        return constrain(state), metrics

    def train(key: Array, hparams: Hyperparams | None = None) -> TrainResult:
        hp = config.hyperparams() if hparams is None else hparams
        state, metrics = jax.lax.scan(lambda s, _: step(s, hp), constrain(init(key, hp)), None,
                                      length=config.num_updates)
        return TrainResult(state=state, metrics=metrics)

    return train

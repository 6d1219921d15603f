"""Hyperparameter sweeps: every grid point x seed trained by one compiled program.

    result = sweep(PPOConfig(), seeds=8, grid={"lr": [1e-4, 3e-4], "policy_loss": ["ppo_clip",
                                                                                  "kl_penalty"]})
    print(result.markdown())

The grid may hold any field of :class:`~purejaxppo.config.Hyperparams` (traced into the program)
and ``policy_loss`` (picked by a traced index with ``lax.switch``). The runs form one flat batch,
split over the devices of a mesh (:mod:`purejaxppo.parallel`) and reshaped on return to named
axes ``(grid keys..., "seed")``.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from purejaxppo.config import HYPERPARAMS, Hyperparams, PPOConfig, check_config
from purejaxppo.metrics import final_return, final_window
from purejaxppo.parallel import (
    compiler_options,
    device_mesh,
    dividing_devices,
    runs_per_batch,
    runs_phrase,
    shard_runs,
    vmap_in_batches,
)
from purejaxppo.train import TrainResult, as_key, make_train

Array = jax.Array

SWEEPABLE = (*HYPERPARAMS, "policy_loss")
"""Grid keys one program can sweep: the traced hyperparameters and the policy loss."""

@dataclasses.dataclass(frozen=True, repr=False)
class SweepResult:
    """The runs of a sweep: ``result`` leaves are ``[*grid shape, num_seeds, ...]``."""

    result: TrainResult
    """Final states and per-update metrics, leading axes named by ``axes``."""
    axes: tuple[str, ...]
    """Names of the leading axes: the grid keys in order, then ``"seed"``."""
    values: dict[str, list]
    """The value at each index of each axis (``"seed"``: the seed numbers, or 0..S-1 for keys)."""
    config: PPOConfig
    """The static settings shared by every run (grid values override its hyperparameters)."""

    @property
    def shape(self) -> tuple[int, ...]:
        """Lengths of ``axes``."""
        return tuple(len(self.values[a]) for a in self.axes)

    def final_returns(self) -> np.ndarray:
        """Final return of every run, ``[*grid shape, num_seeds]``
        (:func:`purejaxppo.metrics.final_return`)."""
        return final_return(to_host(self.result.metrics["episode_return"]))

    def table(self) -> list[dict[str, Any]]:
        """One row per run (tidy): each axis's value and ``final_return``, in grid order."""
        returns = self.final_returns()
        rows = []
        for index in itertools.product(*(range(n) for n in self.shape)):
            row = {a: self.values[a][i] for a, i in zip(self.axes, index, strict=True)}
            rows.append({**row, "final_return": float(returns[index])})
        return rows

    def markdown(self) -> str:
        """A markdown table: one row per grid point, final return over seeds (mean, std, range)."""
        returns = self.final_returns()
        keys = self.axes[:-1]
        seeds = self.shape[-1]
        header = [*keys, f"final return (mean ± std, {seeds} seeds)", "min", "max"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for index in itertools.product(*(range(n) for n in self.shape[:-1])):
            r = returns[index]
            cells = [_fmt(self.values[k][i]) for k, i in zip(keys, index, strict=True)]
            cells += [f"{np.mean(r):.1f} ± {np.std(r):.1f}", f"{np.min(r):.1f}",
                      f"{np.max(r):.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        n = self.config.num_updates
        lines.append(f"\nFinal return: mean episode return over the last {final_window(n)} of "
                     f"{n} updates.")
        return "\n".join(lines)

    def __repr__(self) -> str:
        shape = ", ".join(f"{a}={n}" for a, n in zip(self.axes, self.shape, strict=True))
        return f"SweepResult({shape}, env={self.config.env!r})"


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def to_host(x: Array) -> np.ndarray:
    """A (possibly multi-host sharded) array as one numpy array on this host."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def on_every_host(tree: Any) -> Any:
    """``tree`` with every array that spans several processes gathered into this one (numpy;
    typed keys stay keys), so that each process holds all of it; unchanged in one process.

    The search and sweep functions return their results so under ``jax.distributed``: a result's
    methods then compute on the host alone, and no process waits in a gather that another process
    never enters (e.g. when only process 0 writes the outputs).
    """
    if jax.process_count() == 1:
        return tree

    def gather(x: Any) -> Any:
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(to_host(jax.random.key_data(x)),
                                            impl=jax.random.key_impl(x))
        return to_host(x)

    return jax.tree.map(gather, tree)


def check_grid(config: PPOConfig, grid: Mapping[str, Sequence[Any]] | None
               ) -> dict[str, list]:
    """Validates a grid: sweepable keys, non-empty lists of values each valid for ``config``.

    Raises:
        ValueError: for a key that is not sweepable in one program (naming the static fields
            that need one program per value), an empty list, or an invalid value.
        TypeError: ``config`` is not a :class:`PPOConfig`.
    """
    check_config(config)
    grid = dict(grid or {})
    static = [f.name for f in dataclasses.fields(PPOConfig) if f.name not in SWEEPABLE]
    checked = {}
    for key, values in grid.items():
        if key not in SWEEPABLE:
            raise ValueError(
                f"grid key {key!r} cannot be swept inside one compiled program. Sweepable: "
                f"{', '.join(SWEEPABLE)}. Static fields ({', '.join(static)}) fix shapes or "
                "code: run one sweep per value instead.")
        if isinstance(values, jax.Array) and not isinstance(values, jax.core.Tracer):
            values = np.asarray(values)  # jnp.linspace(...) as well as a list or a NumPy array
        if (isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray)
                or np.ndim(values) != 1):
            raise ValueError(f"grid[{key!r}] must be a list of values, got {values!r}")
        values = [v.item() if isinstance(v, np.generic) else v for v in values]
        if not values:
            raise ValueError(f"grid[{key!r}] is empty")
        for v in values:
            config.replace(**{key: v})  # PPOConfig's own validation names field, value and range
        checked[key] = values
    if "policy_loss" in checked and config.update_rule != "ppo":
        raise ValueError(f"policy_loss cannot be swept with update_rule={config.update_rule!r}")
    return checked


def seed_keys(seeds: int | Array) -> tuple[Array, list]:
    """``(keys [S], seed labels)``: ``jax.random.key(0..S-1)`` for an int, else the keys given."""
    if isinstance(seeds, (bool, np.bool_)) or seeds is None or isinstance(seeds, (float, str)):
        raise ValueError(f"seeds={seeds!r} is invalid: give a positive number of seeds or an "
                         "array of keys (jax.random.split(key, S))")
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ValueError(f"seeds={seeds} must be a positive number of seeds or a key array")
        return jax.vmap(jax.random.key)(np.arange(int(seeds))), list(range(int(seeds)))
    keys = as_key(seeds)
    if keys.ndim != 1:
        raise ValueError(f"seeds must be one key per seed, [S]; got key shape {keys.shape}")
    return keys, list(range(keys.shape[0]))


def choose_mesh(num_runs: int, mesh: Mesh | None) -> Mesh | None:
    """The mesh the runs are split over, or None to run them on one device.

    By default every device when they divide ``num_runs``; else (one process) the largest number
    of devices that does, with a warning.

    Raises:
        ValueError: if an explicit ``mesh`` does not divide ``num_runs``.
    """
    if mesh is not None:
        if num_runs % mesh.size:
            raise ValueError(f"{runs_phrase(num_runs)} (grid points x seeds) cannot be split "
                             f"evenly over the {mesh.size} devices of the mesh")
        return mesh
    n = jax.device_count()
    if n == 1:
        return None
    if num_runs % n == 0:
        return device_mesh()
    # Several processes must all take part in one program: no subset of the devices there.
    devices = jax.devices()[:1] if jax.process_count() > 1 else dividing_devices(num_runs,
                                                                                 jax.devices())
    where = "one device" if len(devices) == 1 else f"{len(devices)} of them"
    warnings.warn(f"{runs_phrase(num_runs)} (grid points x seeds) cannot be split evenly over "
                  f"{n} devices: running on {where}. Use a multiple of {n} runs to use all.",
                  stacklevel=3)
    return None if len(devices) == 1 else Mesh(np.asarray(devices), ("batch",))


def sweep(config: PPOConfig, seeds: int | Array = 16,
          grid: Mapping[str, Sequence[Any]] | None = None, mesh: Mesh | None = None
          ) -> SweepResult:
    """Trains every point of the cartesian ``grid`` with every seed, in one jitted program.

    Args:
        config: static settings, and the hyperparameters of keys absent from ``grid``.
        seeds: a number of seeds (keys ``jax.random.key(0..S-1)``, as the command line's seeds)
            or an array of keys; every grid point uses the same seeds.
        grid: ``{name: [values]}`` with names among :data:`SWEEPABLE`.
        mesh: devices to split the runs over (along all its axes). By default every device of
            ``jax.devices()`` (all hosts after ``jax.distributed.initialize()``).

    Returns:
        A :class:`SweepResult` with axes ``(*grid keys, "seed")``.
    """
    values = check_grid(config, grid)
    keys, seed_labels = seed_keys(seeds)
    axes = (*values, "seed")
    shape = tuple(len(v) for v in values.values())
    points = list(itertools.product(*values.values()))
    num_seeds = len(seed_labels)

    # Flat batch, point-major: run b is point b // S with seed b % S.
    base = config.hyperparams()
    columns = {f: np.full(len(points), np.float32(getattr(base, f))) for f in HYPERPARAMS}
    for k, key in enumerate(values):
        if key in HYPERPARAMS:
            columns[key] = np.asarray([p[k] for p in points], np.float32)
    hparams = Hyperparams(**{f: np.repeat(c, num_seeds) for f, c in columns.items()})
    policy_losses = loss_index = None
    if "policy_loss" in values:
        policy_losses = tuple(dict.fromkeys(values["policy_loss"]))
        k = list(values).index("policy_loss")
        loss_index = np.repeat(np.asarray([policy_losses.index(p[k]) for p in points],
                                          np.int32), num_seeds)
    key_data = np.asarray(jax.random.key_data(keys))
    key_data = np.tile(key_data, (len(points),) + (1,) * (key_data.ndim - 1))
    keys = jax.random.wrap_key_data(key_data, impl=jax.random.key_impl(keys))
    result = train_runs(config, keys, hparams, policy_losses, loss_index, mesh)
    result = jax.tree.map(lambda x: x.reshape(*shape, num_seeds, *x.shape[1:]), result)
    return SweepResult(result, axes, {**values, "seed": seed_labels}, config)


def runs_program(config: PPOConfig, num_runs: int, impl: Any,
                 policy_losses: tuple[str, ...] | None = None, mesh: Mesh | None = None,
                 batch_size: int | None = None) -> Callable[..., TrainResult]:
    """``program(key_data [B], hparams [B], loss_index [B] | None) -> TrainResult``, to jit:
    ``num_runs`` independent runs of ``make_train(config, policy_losses)``.

    The runs are split over the devices of :func:`choose_mesh` (``mesh``) with
    :func:`purejaxppo.parallel.shard_runs`, and each device trains its runs ``batch_size`` at a
    time (:func:`purejaxppo.parallel.vmap_in_batches`; by default
    :func:`purejaxppo.parallel.runs_per_batch`: 8 on a CPU split into one device per core, all
    of them in one ``vmap`` elsewhere). ``impl`` is the keys' PRNG implementation
    (``jax.random.key_impl``): the program takes their raw key data, which ``shard_map`` splits.
    """
    train = make_train(config, policy_losses)

    def one(key_data: Array, hparams: Hyperparams, loss_index: Array | None) -> TrainResult:
        return train(jax.random.wrap_key_data(key_data, impl=impl), hparams, loss_index)

    program = vmap_in_batches(one, runs_per_batch() if batch_size is None else batch_size)
    use = choose_mesh(num_runs, mesh)
    return program if use is None else shard_runs(program, use)


def train_runs(config: PPOConfig, keys: Array, hparams: Hyperparams,
               policy_losses: tuple[str, ...] | None = None, loss_index: Array | None = None,
               mesh: Mesh | None = None, batch_size: int | None = None) -> TrainResult:
    """Trains a flat batch of independent runs in one jitted program, split over the devices.

    Run ``b`` is ``make_train(config, policy_losses)(keys[b], hparams[b], loss_index[b])``.
    The machinery of :func:`sweep` (and of :func:`purejaxppo.search.random_search`); the program
    is :func:`runs_program`'s.

    Args:
        keys: ``[B]`` typed keys, one per run.
        hparams: :class:`Hyperparams` of ``[B]`` arrays.
        policy_losses, loss_index: as in :func:`purejaxppo.make_train`; ``loss_index`` ``[B]``.
        mesh: as in :func:`sweep` (:func:`choose_mesh`).
        batch_size: as in :func:`runs_program`.
    """
    keys = as_key(keys)
    if keys.ndim != 1:
        raise ValueError(f"keys must be one key per run, [B]; got key shape {keys.shape}")
    if not isinstance(hparams, Hyperparams):
        raise ValueError(f"hparams must be a purejaxppo.Hyperparams of [B] arrays, got "
                         f"{type(hparams).__name__}")
    runs = keys.shape[0]
    for name, value in hparams._asdict().items():
        if np.shape(value) != (runs,):
            raise ValueError(f"hparams.{name} has shape {list(np.shape(value))}: it must be "
                             f"[{runs}], one value per key")
        if not isinstance(value, jax.core.Tracer) and getattr(value, "is_fully_addressable",
                                                              True):
            values = np.asarray(value)
            for x in (values.min(), values.max()):  # each field's valid set is an interval
                config.replace(**{name: float(x)})
    if loss_index is not None and np.shape(loss_index) != (runs,):
        raise ValueError(f"loss_index has shape {list(np.shape(loss_index))}: it must be "
                         f"[{runs}], one index per key")
    key_data = np.asarray(jax.random.key_data(keys))
    program = runs_program(config, keys.shape[0], jax.random.key_impl(keys), policy_losses,
                           mesh, batch_size)
    result = jax.jit(program, compiler_options=compiler_options())(key_data, hparams, loss_index)
    # Wait for every device first: when the grid's leading axis does not divide over the devices,
    # a later reshape is a program with an all-gather, and XLA:CPU aborts a collective that one
    # device reaches more than 40 s before another (a device still finishing its runs).
    return on_every_host(jax.block_until_ready(result))

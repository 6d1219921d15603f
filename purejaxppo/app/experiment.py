"""Experiments: every seed of one config trained by one compiled program, checkpointed and saved.

The program is ``jax.vmap(init)`` over seeds, then a loop of ``jax.vmap(update)``, run in chunks of
about a second (:func:`next_chunk`; one compiled program serves chunks of every length). With
several devices (a GPU per device, or :func:`purejaxppo.parallel.use_cpu_cores` on a CPU host)
the seeds are split over them by :func:`purejaxppo.parallel.seed_sharding` and ``jax.shard_map``,
and a CPU device of one core runs its seeds in groups (:func:`purejaxppo.parallel.runs_per_batch`).
Between chunks the host draws the progress bar, appends the chunk's rows to metrics.csv, saves
checkpoints and answers Ctrl-C; chunks back to back equal one scan bit for bit.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from purejaxppo.app import checkpoint, outputs
from purejaxppo.app.loggers import Logger
from purejaxppo.app.presets import RunOptions, SettingsError, settings_dict, split_settings
from purejaxppo.app.progress import ProgressBar
from purejaxppo.config import Hyperparams, PPOConfig
from purejaxppo.metrics import FINAL_FRACTION, final_return, final_window
from purejaxppo.parallel import (
    compiler_options,
    gather_runs,
    in_groups,
    put_runs,
    runs_per_batch,
    seed_sharding,
)
from purejaxppo.train import TrainState, eval_env_bytes, make_init, make_update, memory_estimate

Array = jax.Array


def seed_keys(options: RunOptions) -> Array:
    """``jax.random.key(seed + i)`` for each of the ``num_seeds`` seeds."""
    seeds = jnp.arange(options.seed, options.seed + options.num_seeds)
    return jax.vmap(jax.random.key)(seeds)


def make_seeds_init(config: PPOConfig, copies: int = 1
                    ) -> Callable[[Array, Hyperparams], TrainState]:
    """``init(keys [S], hparams) -> TrainState`` with a leading seed axis on every leaf.

    ``copies`` > 1 initialises each seed as one of that many identical copies in a batch
    (:data:`RunOptions.batched_as`) and returns the first: the arithmetic of a device that holds
    several seeds.
    """
    init = jax.vmap(make_init(config), in_axes=(0, None))
    if copies == 1:
        return init

    def init_as_batched(keys: Array, hparams: Hyperparams) -> TrainState:
        return _first(init(jnp.concatenate([keys] * copies), hparams), len(keys))

    return init_as_batched


def _first(tree: Any, n: int) -> Any:
    """The first ``n`` entries of every leaf's leading axis."""
    return jax.tree.map(lambda x: x[:n], tree)


def state_shapes(config: PPOConfig, options: RunOptions) -> TrainState:
    """Shapes and dtypes of the train state of every seed, found without compiling anything."""
    init = make_seeds_init(config, options.batched_as)  # builds the env on the host
    return jax.eval_shape(init, seed_keys(options), config.hyperparams())


def make_seeds_run(config: PPOConfig, capacity: int, copies: int = 1, mesh: Mesh | None = None,
                   batch_size: int | None = None
                   ) -> Callable[..., tuple[TrainState, dict[str, Array]]]:
    """``run(state [S], hparams, n) -> (state, metrics {name: [capacity, S]})``: ``n`` updates.

    ``n`` (at most ``capacity``) is traced: one compiled program runs chunks of any length (a
    ``lax.fori_loop`` of ``jax.vmap(update)``), and the first ``n`` rows of the metrics are the
    chunk's. No host callback, so the compilation cache can keep the program.

    ``mesh`` (one axis, the seeds' :func:`purejaxppo.parallel.seed_sharding`) splits the seeds
    over its devices with ``jax.shard_map``, and each device runs its seeds ``batch_size`` at a
    time (:func:`purejaxppo.parallel.in_groups`; None: all of them in one ``vmap``), every group
    through the whole chunk.

    ``copies`` > 1 runs the chunk on that many identical copies of the state side by side and
    keeps the first (:data:`RunOptions.batched_as`): XLA then batches each seed's matrix products
    as it does on a device holding several seeds, which a lone seed's unbatched products round
    differently from.
    """
    update = jax.vmap(make_update(config), in_axes=(0, None, None, None))
    every = config.eval_every

    def due(state: TrainState) -> Array | None:
        # Unbatched (every seed has done as many updates), so an evaluation runs only when due.
        return (state.updates_done[0] + 1) % every == 0 if every else None

    def chunk(state: TrainState, hparams: Hyperparams, n: Array):
        """``n`` updates of a batch of seeds; metrics ``{name: [S, capacity]}``."""
        shapes = jax.eval_shape(update, state, hparams, None, due(state))[1]
        rows = {k: jnp.zeros((capacity, *v.shape), v.dtype) for k, v in shapes.items()}

        def body(i: Array, carry: tuple[TrainState, dict[str, Array]]):
            state, rows = carry
            state, metrics = update(state, hparams, None, due(state))
            return state, {k: rows[k].at[i].set(metrics[k]) for k in rows}

        state, rows = jax.lax.fori_loop(0, n, body, (state, rows))
        return state, {k: jnp.moveaxis(v, 0, 1) for k, v in rows.items()}

    def local(state: TrainState, hparams: Hyperparams, n: Array):
        seeds = len(state.updates_done)
        if copies > 1:
            state = jax.tree.map(lambda x: jnp.concatenate([x] * copies), state)
        state, rows = in_groups(lambda s: chunk(s, hparams, n), batch_size)(state)
        if copies > 1:
            state, rows = _first(state, seeds), _first(rows, seeds)
        return state, {k: jnp.moveaxis(v, 0, 1) for k, v in rows.items()}

    if mesh is None:
        return local
    (axis,) = mesh.axis_names
    # check_vma=False: the loop's carries start as per-device constants (the metrics buffers)
    # and become per-device data; nothing is communicated.
    return jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(), P()),
                         out_specs=(P(axis), P(None, axis)), check_vma=False)


CHUNK_SECONDS = 1.0
"""A chunk of updates lasts about this long: between chunks the progress bar and metrics.csv
are brought up to date and Ctrl-C is answered."""
MAX_CHUNK = 1024
"""The most updates in one chunk (the size of its metrics buffer)."""


def next_chunk(done: int, total: int, every: int, seconds_per_update: float | None) -> int:
    """How many updates the next chunk runs: about :data:`CHUNK_SECONDS` of work (one update
    while the speed is unknown), at most :data:`MAX_CHUNK`, never past the run's end nor past
    the next multiple of ``every`` (the checkpoint cadence, 0 for none)."""
    n = 1 if not seconds_per_update else round(CHUNK_SECONDS / seconds_per_update)
    n = max(1, min(n, MAX_CHUNK, total - done))
    if every > 0:
        n = min(n, every - done % every)
    return n


class Start(NamedTuple):
    """Where a training session starts: a fresh or a restored state, and the metrics so far."""

    state: TrainState
    history: dict[str, np.ndarray]
    """``{name: [num_seeds, updates_done]}``; empty for a fresh run."""
    seconds: float
    """Time taken to build (compile and run ``init``) and restore it."""


def start(config: PPOConfig, options: RunOptions, run_dir: str | Path | None = None,
          resume: bool = False) -> Start:
    """The initial state of every seed, or (``resume``) the newest checkpoint of ``run_dir``.

    Raises:
        CheckpointError: ``resume`` and the checkpoint is missing, corrupt or from another config.
    """
    t0 = time.perf_counter()
    history: dict[str, np.ndarray] = {}
    if resume:
        state, history, done = checkpoint.restore(run_dir, state_shapes(config, options))
        if int(state.updates_done[0]) != done or any(v.shape != (options.num_seeds, done)
                                               for v in history.values()):
            raise checkpoint.CheckpointError(f"the checkpoint in {str(run_dir)!r} is "
                                             "inconsistent; point checkpoints/latest at an "
                                             "earlier one")
    else:
        state = jax.jit(make_seeds_init(config, options.batched_as),
                        compiler_options=compiler_options())(
            seed_keys(options), config.hyperparams())
    sharding = seed_sharding(options.num_seeds)
    if sharding is not None:
        state = put_runs(state, sharding)
    jax.block_until_ready(state)
    return Start(state, history, time.perf_counter() - t0)


def updates_done(begin: Start) -> int:
    """Updates done before ``begin`` (read from its metrics: with several processes the state's
    counters are not all on this host)."""
    return next(iter(begin.history.values())).shape[1] if begin.history else 0


class Outcome(NamedTuple):
    """A finished (or resumed and finished) training run."""

    state: TrainState
    """Final train state, leading seed axis."""
    metrics: dict[str, np.ndarray]
    """Every update's metrics, ``{name: [num_seeds, num_updates]}``."""
    compile_s: float
    """Seconds spent building the initial state and compiling, in this session."""
    run_s: float
    """Seconds spent running the compiled program in this session (checkpoint writes included)."""
    start_update: int
    """Updates already done when this session started (0 unless resumed)."""


def available_memory() -> int | None:
    """Bytes this process may still use: the default device's free memory on an accelerator;
    on CPU, the lesser of the host's available memory and the cgroup's remaining limit. None
    when unknown."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return None
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def _check_fits(needed: int, what: str, fix: str) -> None:
    available = available_memory()
    if available is not None and needed > 0.8 * available:
        raise SettingsError(f"{what} needs about {needed / 2**30:.1f} GiB of memory but "
                            f"{available / 2**30:.1f} GiB is available; {fix}")


def check_memory(config: PPOConfig, num_seeds: int, runs_flag: str = "--num-seeds") -> None:
    """Refuses, before anything is compiled, a run that cannot fit in memory
    (:func:`purejaxppo.train.memory_estimate`); ``runs_flag`` names what sets ``num_seeds``."""
    _check_fits(memory_estimate(config, num_seeds),
                f"training {num_seeds} seed{'s' if num_seeds > 1 else ''} of {config.num_envs} "
                f"envs x {config.num_steps} steps with hidden sizes "
                f"{list(config.hidden_sizes)}",
                f"lower {runs_flag}, --num-envs, --num-steps, --hidden-sizes, --update-epochs"
                + (" or --eval-episodes" if config.eval_every else ""))


def check_eval_memory(config: PPOConfig, num_envs: int) -> None:
    """Refuses an evaluation of ``num_envs`` parallel episodes that cannot fit in memory."""
    from purejaxppo import envs

    _check_fits(4 * num_envs * eval_env_bytes(envs.make(config.env)),
                f"evaluating {num_envs:,} episodes at once", "lower --episodes")


class Interrupted(Exception):
    """Ctrl-C during training (one process): ``saved`` says whether a checkpoint holds the work
    done so far (a run without a directory saves nothing)."""

    def __init__(self, done: int, saved: bool) -> None:
        super().__init__(f"interrupted after {done} updates")
        self.done = done
        self.saved = saved


def train(config: PPOConfig, options: RunOptions, begin: Start | None = None,
          run_dir: str | Path | None = None, progress: IO[str] | None = None,
          loggers: Sequence[Logger] = ()) -> Outcome:
    """Trains every seed to ``config.num_updates`` in chunks of about a second
    (:func:`next_chunk`), all run by one compiled program.

    After each chunk the progress bar moves, ``run_dir/metrics.csv`` gets the chunk's rows (it
    grows while the program runs), and a checkpoint is written every
    ``options.checkpoint_every`` updates and at the end. The state only moves on once a chunk has
    finished, so Ctrl-C (``KeyboardInterrupt``) between or during chunks saves the last finished
    chunk's state as a checkpoint (with a ``run_dir``) and raises :class:`Interrupted`; with
    several processes it re-raises ``KeyboardInterrupt`` (the others cannot join a save from
    there). Chunks back to back equal one scan bit for bit.

    Args:
        config: the PPO settings.
        options: seeds and checkpoint cadence.
        begin: the state to continue from (:func:`start`); None starts afresh.
        run_dir: where checkpoints and metrics.csv go; None saves nothing.
        progress: a stream to draw a progress bar on (None: no bar).
        loggers: get every chunk's metrics as it finishes (:mod:`purejaxppo.app.loggers`).
    """
    begin = start(config, options) if begin is None else begin
    t0 = time.perf_counter()
    hparams = config.hyperparams()
    state, history = begin.state, dict(begin.history)
    done = first = updates_done(begin)
    writer = jax.process_index() == 0
    several = jax.process_count() > 1
    total, every = config.num_updates, options.checkpoint_every
    capacity = max(1, min(MAX_CHUNK, total - done))
    sharding = seed_sharding(options.num_seeds)
    run = jax.jit(make_seeds_run(config, capacity, options.batched_as,
                                 None if sharding is None else sharding.mesh, runs_per_batch()),
                  compiler_options=compiler_options())
    if done < total:
        run = run.lower(state, hparams, jnp.int32(1)).compile()
    compile_s = begin.seconds + time.perf_counter() - t0

    seeds = seed_list(options)
    csv_path = None if run_dir is None else Path(run_dir) / outputs.METRICS_FILE
    if csv_path is not None and history and writer:
        outputs.atomic_write(csv_path, outputs.metrics_csv(history, seeds))
    bar = None
    if progress is not None and done < total:
        bar = ProgressBar(total, done, config.batch_size * options.num_seeds, progress)
    t1 = time.perf_counter()
    saved_at = first if history else -1
    per_update = None
    try:
        if bar is not None:
            bar.start()
        while done < total:
            # Several processes must run chunks of the same lengths (their programs exchange
            # data): a fixed twentieth of the run instead of a measured second.
            pace = CHUNK_SECONDS * 20 / total if several else per_update
            n = next_chunk(done, total, every, pace)
            t_chunk = time.perf_counter()
            new_state, rows = run(state, hparams, jnp.int32(n))
            chunk = {k: np.asarray(v)[:n].T for k, v in jax.device_get(gather_runs(rows)).items()}
            state, done = new_state, done + n  # only a finished chunk moves the run on
            per_update = (time.perf_counter() - t_chunk) / n
            if csv_path is not None and writer:
                outputs.append_metrics_csv(csv_path, chunk, seeds, first_update=done - n,
                                           header=not history)
            history = {k: np.concatenate([history[k], v], axis=1) if k in history else v
                       for k, v in chunk.items()}
            for logger in loggers:
                logger.write(done - n, chunk)
            if bar is not None:
                last = chunk["episode_return"][:, -1]
                bar(done, float(np.nanmean(last)) if np.isfinite(last).any() else float("nan"))
            if run_dir is not None and every and done % every == 0 and done < total:
                save(run_dir, state, history, done, writer, options.keep_checkpoints)
                saved_at = done
        if run_dir is not None and done > first:
            save(run_dir, state, history, done, writer, options.keep_checkpoints)
    except KeyboardInterrupt:
        if several:  # the other processes cannot join a gather from here
            raise
        saved = False
        if run_dir is not None and done > max(saved_at, 0):
            save(run_dir, state, history, done, writer, options.keep_checkpoints)
            saved = True
        raise Interrupted(done, saved or saved_at > 0) from None
    finally:
        if bar is not None:
            bar.close()
    return Outcome(gather_runs(state), history, compile_s, time.perf_counter() - t1, first)


def save(run_dir: str | Path, state: TrainState, history: dict[str, np.ndarray], done: int,
         writer: bool, keep: int = 0) -> None:
    """A checkpoint of every seed: gathered from every process (all must call this), written by
    the ``writer`` alone, keeping its newest ``keep`` (0: all)."""
    state = gather_runs(state)
    if writer:
        checkpoint.save(run_dir, state, history, done, keep=keep)


def seed_list(options: RunOptions) -> list[int]:
    """The seed numbers of a run, in row order."""
    return list(range(options.seed, options.seed + options.num_seeds))


def read_run_settings(run_dir: str | Path) -> tuple[PPOConfig, RunOptions, str | None]:
    """``(config, options, preset)`` from ``run_dir/config.json``."""
    path = Path(run_dir) / outputs.CONFIG_FILE
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise SettingsError(f"{str(run_dir)!r} is a file, not a run directory; give the "
                            "directory a training run wrote (its --out)")
    if not Path(run_dir).is_dir():
        raise SettingsError(f"run directory {str(run_dir)!r} does not exist; give the --out "
                            "directory of a training run")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"{str(path)!r} is missing, so {str(run_dir)!r} is not a purejaxppo "
                            "run directory; give the --out directory of a training run") from None
    except (OSError, ValueError):
        raise SettingsError(f"{str(path)!r} is unreadable or not valid JSON; restore it from the "
                            "run's summary or train again") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{str(path)!r} does not hold a settings mapping; restore it or "
                            "train again")
    preset = data.pop("preset", None)
    config, options = split_settings(data)
    return config, options, preset


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for name in ("purejaxppo", "jax", "jaxlib", "flax", "optax", "gymnax"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "unknown"
    return out


def device_description(num_seeds: int = 1) -> str:
    """E.g. ``"cpu (2 x cpu, seeds split over 2)"`` or ``"gpu (1 x NVIDIA H100 80GB HBM3)"``."""
    devices = jax.devices()
    sharding = seed_sharding(num_seeds)
    split = f", seeds split over {sharding.mesh.size}" if sharding is not None else ""
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return (f"{jax.default_backend()} ({len(devices)} x {devices[0].device_kind}{processes}"
            f"{split})")


def first_nonfinite(state: TrainState, options: RunOptions) -> dict[str, int] | None:
    """``{seed: first update with a NaN/Inf loss or parameter}`` for the seeds that had one,
    numbered from 1 like the ``update`` column of metrics.csv."""
    bad = np.asarray(state.first_nonfinite).reshape(-1)
    found = {options.seed + i: int(u) + 1 for i, u in enumerate(bad) if u >= 0}
    return found or None


def summarize(config: PPOConfig, options: RunOptions, preset: str | None,
              outcome: Outcome) -> dict[str, Any]:
    """The contents of summary.json."""
    returns = outcome.metrics["episode_return"]
    final = final_return(returns)
    finished = final[~np.isnan(final)]
    window = final_window(config.num_updates)
    steps_this_session = ((config.num_updates - outcome.start_update) * config.batch_size
                          * options.num_seeds)
    return {
        "env": config.env,
        "preset": preset,
        "num_seeds": options.num_seeds,
        "seeds": list(range(options.seed, options.seed + options.num_seeds)),
        "num_updates": config.num_updates,
        "env_steps_per_seed": config.num_updates * config.batch_size,
        "final_return": {
            "mean": float(finished.mean()) if finished.size else None,
            "std": float(finished.std()) if finished.size else None,
            "per_seed": [None if np.isnan(r) else float(r) for r in final],
            "definition": f"mean episode_return over the last {window} of {config.num_updates} "
                          f"updates (the last {FINAL_FRACTION:.0%}, at least one), per "
                          "seed; mean and std over the seeds in which an episode finished; "
                          "null where none did",
        },
        "compile_time_s": round(outcome.compile_s, 3),
        "run_time_s": round(outcome.run_s, 3),
        "env_steps_per_s": (round(steps_this_session / outcome.run_s)
                            if outcome.run_s > 0 and steps_this_session else None),
        "resumed_from_update": outcome.start_update or None,
        "first_nonfinite_update": first_nonfinite(outcome.state, options),
        "versions": versions(),
        "device": device_description(options.num_seeds),
    }


def write_outputs(run_dir: str | Path, config: PPOConfig, options: RunOptions,
                  preset: str | None, outcome: Outcome) -> dict[str, Any]:
    """Writes metrics.csv, summary.json and returns.png; returns the summary."""
    run_dir = Path(run_dir)
    outputs.atomic_write(run_dir / outputs.METRICS_FILE,
                         outputs.metrics_csv(outcome.metrics, seed_list(options)))
    summary = summarize(config, options, preset, outcome)
    outputs.write_json(run_dir / outputs.SUMMARY_FILE, summary)
    outputs.plot_returns(run_dir / outputs.PLOT_FILE, outcome.metrics["env_steps"][0],
                         outcome.metrics["episode_return"],
                         f"{config.env}: {config.update_rule.upper()}, {options.num_seeds} seed"
                         f"{'s' if options.num_seeds > 1 else ''}")
    return summary


def write_config(run_dir: str | Path, config: PPOConfig, options: RunOptions,
                 preset: str | None) -> None:
    """Writes the fully resolved settings to ``run_dir/config.json``."""
    outputs.write_json(Path(run_dir) / outputs.CONFIG_FILE, settings_dict(config, options, preset))


def summary_table(summary: dict[str, Any], run_dir: str | Path) -> str:
    """The end-of-run table printed by ``purejaxppo train``."""
    final = summary["final_return"]
    per_seed = ", ".join("none finished" if r is None else f"{r:.1f}" for r in final["per_seed"])
    final_text = ("no episode finished yet" if final["mean"] is None
                  else f"{final['mean']:.2f} ± {final['std']:.2f}")
    sps = summary["env_steps_per_s"]
    rows = [
        ("environment", f"{summary['env']}" + (f" (preset {summary['preset']})"
                                                if summary["preset"] else " (no preset)")),
        ("seeds", f"{summary['num_seeds']} ({', '.join(map(str, summary['seeds']))})"),
        ("updates", f"{summary['num_updates']:,} = {summary['env_steps_per_seed']:,} env steps "
                    "per seed"),
        ("final return", final_text
                         + (f"  (per seed: {per_seed})" if summary["num_seeds"] > 1 else "")),
        ("", f"mean over the last {final_window(summary['num_updates'])} updates"),
        ("compile time", f"{summary['compile_time_s']:.1f} s"),
        ("run time", f"{summary['run_time_s']:.1f} s"
                     + (f" ({sps:,} env steps/s)" if sps else "")),
        ("device", summary["device"]),
        ("outputs", f"{run_dir}/"),
    ]
    if summary["resumed_from_update"]:
        rows.insert(3, ("resumed at", f"update {summary['resumed_from_update']:,}"))
    return outputs.format_table(rows)


"""Experiments: every seed of one config trained by one compiled program, checkpointed and saved.

The program is ``jax.vmap(init)`` over seeds, then a ``lax.scan`` whose body is
``jax.vmap(update)`` followed, outside the vmap, by an optional progress callback fired every
``k`` updates through ``lax.cond`` (one host sync per ``k`` updates, with the seed-mean return).
With several devices (a GPU per device, or :func:`purejaxppo.parallel.use_cpu_cores` on a CPU
host) the seeds are split over them by :func:`purejaxppo.parallel.seed_sharding`; ``jax.jit``
partitions the program along the seed axis. With ``checkpoint_every = N`` the scan runs in
chunks of ``N`` updates (one compiled program, reused) and the state is saved between chunks;
chunks back to back equal one scan bit for bit.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.app import checkpoint, outputs
from purejaxppo.app.presets import RunOptions, SettingsError, settings_dict, split_settings
from purejaxppo.app.progress import ProgressBar, report_every
from purejaxppo.config import Hyperparams, PPOConfig
from purejaxppo.metrics import FINAL_FRACTION, final_return, final_window
from purejaxppo.parallel import compiler_options, gather_runs, put_runs, seed_sharding
from purejaxppo.train import TrainState, make_init, make_update

Array = jax.Array


def seed_keys(options: RunOptions) -> Array:
    """``jax.random.key(seed + i)`` for each of the ``num_seeds`` seeds."""
    seeds = jnp.arange(options.seed, options.seed + options.num_seeds)
    return jax.vmap(jax.random.key)(seeds)


def make_seeds_init(config: PPOConfig) -> Callable[[Array, Hyperparams], TrainState]:
    """``init(keys [S], hparams) -> TrainState`` with a leading seed axis on every leaf."""
    return jax.vmap(make_init(config), in_axes=(0, None))


def state_shapes(config: PPOConfig, options: RunOptions) -> TrainState:
    """Shapes and dtypes of the train state of every seed, found without compiling anything."""
    init = make_seeds_init(config)  # builds the env on the host, outside the trace
    return jax.eval_shape(init, seed_keys(options), config.hyperparams())


def make_seeds_run(config: PPOConfig, report: Callable[[Array, Array], None] | None = None,
                   every: int = 1) -> Callable[..., tuple[TrainState, dict[str, Array]]]:
    """``run(state [S], hparams, num_updates) -> (state, metrics {name: [num_updates, S]})``.

    Args:
        config: the settings shared by every seed.
        report: if given, called on the host as ``report(updates_done, mean_return)`` after
            every ``every``-th update and after the last one; the mean is over seeds.
        every: how often to call ``report``.
    """
    update = jax.vmap(make_update(config), in_axes=(0, None))

    def step(state: TrainState, hparams: Hyperparams):
        state, metrics = update(state, hparams)
        if report is not None:
            done = state.updates_done[0]  # identical across seeds
            due = (done % every == 0) | (done == config.num_updates)
            mean_return = jnp.nanmean(metrics["episode_return"])
            jax.lax.cond(due, lambda: jax.debug.callback(report, done, mean_return),
                         lambda: None)
        return state, metrics

    def run(state: TrainState, hparams: Hyperparams, num_updates: int):
        return jax.lax.scan(lambda s, _: step(s, hparams), state, None, length=num_updates)

    return run


def chunk_lengths(done: int, total: int, every: int) -> list[int]:
    """Lengths of the scans that take a run from ``done`` to ``total`` updates."""
    if done >= total:
        return []
    if every <= 0:
        return [total - done]
    return [min(every, total - u) for u in range(done, total, every)]


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
        state = jax.jit(make_seeds_init(config), compiler_options=compiler_options())(
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


def train(config: PPOConfig, options: RunOptions, begin: Start | None = None,
          run_dir: str | Path | None = None, progress: IO[str] | None = None) -> Outcome:
    """Trains every seed to ``config.num_updates``, checkpointing into ``run_dir``.

    Args:
        config: the PPO settings.
        options: seeds and checkpoint cadence.
        begin: the state to continue from (:func:`start`); None starts afresh.
        run_dir: where checkpoints go (every ``options.checkpoint_every`` updates and at the
            end); None saves nothing.
        progress: a stream to draw a progress bar on; None compiles no callback at all.
    """
    begin = start(config, options) if begin is None else begin
    t0 = time.perf_counter()
    hparams = config.hyperparams()
    state, history = begin.state, dict(begin.history)
    done = first = updates_done(begin)
    writer = jax.process_index() == 0
    lengths = chunk_lengths(done, config.num_updates, options.checkpoint_every)

    bar = None
    if progress is not None and lengths:
        bar = ProgressBar(config.num_updates, done, config.batch_size * options.num_seeds,
                          progress)
    run = make_seeds_run(config, bar, report_every(config.num_updates))
    jit_run = jax.jit(run, static_argnums=2, compiler_options=compiler_options())
    compiled = {n: jit_run.lower(state, hparams, n).compile() for n in sorted(set(lengths))}
    compile_s = begin.seconds + time.perf_counter() - t0

    t1 = time.perf_counter()
    if bar is not None:
        bar.start()
    try:
        for n in lengths:
            state, metrics = compiled[n](state, hparams)
            chunk = {k: np.asarray(v).T for k, v in jax.device_get(gather_runs(metrics)).items()}
            history = {k: np.concatenate([history[k], v], axis=1) if k in history else v
                       for k, v in chunk.items()}
            done += n
            if run_dir is not None and options.checkpoint_every and done < config.num_updates:
                save(run_dir, state, history, done, writer)
        if run_dir is not None and lengths:
            save(run_dir, state, history, done, writer)
    finally:
        if bar is not None:
            bar.close()
    return Outcome(gather_runs(state), history, compile_s, time.perf_counter() - t1, first)


def save(run_dir: str | Path, state: TrainState, history: dict[str, np.ndarray], done: int,
         writer: bool) -> None:
    """A checkpoint of every seed: gathered from every process (all must call this), written by
    the ``writer`` alone."""
    state = gather_runs(state)
    if writer:
        checkpoint.save(run_dir, state, history, done)


def read_run_settings(run_dir: str | Path) -> tuple[PPOConfig, RunOptions, str | None]:
    """``(config, options, preset)`` from ``run_dir/config.json``."""
    path = Path(run_dir) / outputs.CONFIG_FILE
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
    seeds = list(range(options.seed, options.seed + options.num_seeds))
    outputs.atomic_write(run_dir / outputs.METRICS_FILE, outputs.metrics_csv(outcome.metrics, seeds))
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


"""What the benchmark scripts share: where they write, how they time, how they report returns.

Every benchmark is a module of the ``benchmarks`` package, run from the repository root::

    python -m benchmarks.NAME [flags]            # writes under default_out_dir(), prints the table
    python -m benchmarks.NAME [flags] --record   # writes the tracked tables in benchmarks/results/
    python -m benchmarks.NAME [flags] --out DIR  # writes in DIR

Output: a benchmark prints its table to stdout and writes its JSON/markdown/PNG files to one
directory, which it prints. That is ``benchmarks/results/`` (tracked by git) only with
``--record``; otherwise ``--out DIR``, or by default :func:`default_out_dir`, a directory under the
system's temporary directory, so that a trial run never overwrites a recorded table.

Anything that must happen before JAX runs (:func:`use_all_cores`) is called at the start of a
script's ``main()``; plots are drawn on an Agg canvas (:func:`new_figure`), with no pyplot and no
backend to choose.

This module imports jax and purejaxppo, never a sibling by its path; the peers' runner
(:mod:`benchmarks.peers.run`) is standard library only, so it also runs with a bare python.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import numpy as np

from purejaxppo import PPOConfig
from purejaxppo.app.outputs import atomic_write
from purejaxppo.app.presets import get_preset
from purejaxppo.metrics import final_return
from purejaxppo.parallel import compiler_options, use_cpu_cores

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BENCHMARKS = Path(__file__).resolve().parent
"""This directory."""
REPO = BENCHMARKS.parent
"""The repository root: the working directory of the subprocesses a benchmark starts."""
RESULTS = BENCHMARKS / "results"
"""The recorded tables (tracked by git), written only with ``--record``."""


# ---------------------------------------------------------------------------------------------
# Where the output goes


def default_out_dir() -> Path:
    """Where a benchmark writes without ``--record`` or ``--out``: untracked, kept between runs
    (benchmarks that merge rows into their previous output merge there)."""
    return Path(tempfile.gettempdir()) / "purejaxppo-benchmarks"


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """Adds ``--record`` and ``--out DIR`` (mutually exclusive) to ``parser``."""
    group = parser.add_argument_group("output").add_mutually_exclusive_group()
    group.add_argument("--record", action="store_true",
                       help=f"write the recorded tables in {RESULTS.relative_to(REPO)}/ (tracked by "
                            "git); without it nothing there is touched")
    group.add_argument("--out", type=Path, metavar="DIR", default=None,
                       help=f"write the output files in DIR (default: {default_out_dir()})")


def output_dir(args: argparse.Namespace) -> Path:
    """The directory ``--record``/``--out`` chose (created)."""
    out = RESULTS if args.record else (args.out or default_out_dir())
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_json(path: Path, payload: Any, indent: int = 2) -> Path:
    """``payload`` as JSON (NaN written as null, so that any JSON reader takes the file),
    written atomically (:func:`write_text`)."""
    return write_text(path, json.dumps(json_safe(payload), indent=indent) + "\n")


def write_text(path: Path, text: str) -> Path:
    """Writes ``text`` to ``path`` atomically: an interrupted benchmark leaves the file as it
    was or as it is now, never half written (a recorded table holds hours of training)."""
    atomic_write(path, text)
    return path


def read_json(path: Path) -> dict:
    """A JSON file this module wrote, or ``{}`` when there is none."""
    return json.loads(path.read_text()) if path.exists() else {}


def print_written(paths: Sequence[Path]) -> None:
    """Says where the output went (after the table, so it is the last thing printed)."""
    print("wrote " + ", ".join(str(p) for p in paths), flush=True)


def json_safe(x: Any) -> Any:
    """``x`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure on an Agg canvas (PNG output, no display, no pyplot)."""
    # Imported here: matplotlib adds ~27 MB to the resident size of the processes whose memory
    # throughput.py and memory.py measure, and only the plotting benchmarks need it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


# ---------------------------------------------------------------------------------------------
# Devices, configs and subprocesses


def use_all_cores() -> int:
    """One JAX CPU device per core (:func:`purejaxppo.parallel.use_cpu_cores`), so that seeds
    split over the cores; the number of devices.

    Call it first thing in ``main()``, before JAX runs anything. When JAX has already run (a
    caller that imported a benchmark and called its ``main``), the devices stay as they are and a
    note says so.
    """
    try:
        return use_cpu_cores()
    except RuntimeError as e:
        print(f"note: {e}; continuing on {jax.device_count()} device(s)", file=sys.stderr)
        return jax.device_count()


def preset_config(env: str, **overrides: Any) -> PPOConfig:
    """The preset of ``env`` (``purejaxppo/app/presets.json``) with ``overrides``."""
    return PPOConfig(**{**get_preset(env).config, "env": env, **overrides})


def whole_rollouts(config: PPOConfig, total_timesteps: int) -> PPOConfig:
    """``config`` with ``total_timesteps`` rounded down to whole rollouts (at least one)."""
    return config.replace(total_timesteps=max(1, total_timesteps // config.batch_size)
                          * config.batch_size)


def run_module(module: str, args: Sequence[str], timeout_s: float, check: bool = False,
               env: dict[str, str] | None = None, cwd: Path | None = None
               ) -> subprocess.CompletedProcess:
    """``python -m module args`` in a fresh process, output captured: from ``cwd`` (default the
    repository root; ``-m`` puts it first on ``sys.path``) with ``env`` (default this process's)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout_s, check=check, env=env)


def device_info() -> dict[str, str]:
    """The first device and the jax version, for a benchmark's JSON."""
    return {"device": str(jax.devices()[0]), "jax": jax.__version__}


# ---------------------------------------------------------------------------------------------
# Timing


class Timed(NamedTuple):
    """A program's output and how long it took."""

    result: Any
    """Output of the last run (blocked until ready)."""
    compile_s: float
    """``jax.jit(fn, compiler_options=compiler_options()).lower(*args).compile()``: tracing,
    lowering and XLA compilation, with the options the command line compiles with."""
    run_s: float
    """Best of ``repeats`` runs of the compiled program, each waited for."""


def compile_and_time(fn: Callable[..., Any], *args: Any, repeats: int = 1) -> Timed:
    """Compiles ``jax.jit(fn)`` for ``args`` (as the command line does) and runs it ``repeats``
    times."""
    start = time.perf_counter()
    compiled = jax.jit(fn, compiler_options=compiler_options()).lower(*args).compile()
    compile_s = time.perf_counter() - start
    run_s, result = float("inf"), None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = jax.block_until_ready(compiled(*args))
        run_s = min(run_s, time.perf_counter() - start)
    return Timed(result, compile_s, run_s)


# ---------------------------------------------------------------------------------------------
# Returns (purejaxppo.metrics.final_return is the one definition of a run's final return)


def nan_mean(x: Any, axis: int | None = None) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN (``episode_return`` is NaN until an episode finishes);
    NaN where every value is, without numpy's warning."""
    x = np.asarray(x, np.float64)
    finite = ~np.isnan(x)
    count = finite.sum(axis=axis)
    total = np.where(finite, x, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


class Finals(NamedTuple):
    """Final returns of a batch of runs (:func:`purejaxppo.metrics.final_return`)."""

    per_run: np.ndarray
    """One per run, NaN for a run in which no episode finished within the final window."""
    mean: float
    """Mean over the runs with a final return (NaN if none has one)."""
    std: float
    """Their standard deviation (NaN if none has one)."""
    unfinished: int
    """Runs without a final return."""


def finals(episode_return: Any) -> Finals:
    """:func:`purejaxppo.metrics.final_return` of every run of ``episode_return [..., updates]``,
    with their mean and std over the runs that have one."""
    return summarize(final_return(episode_return))


def summarize(per_run: Any) -> Finals:
    """:class:`Finals` of the final returns ``per_run`` (NaN: none): mean and std over the runs
    that have one."""
    per_run = np.atleast_1d(np.asarray(per_run, np.float64))
    done = per_run[~np.isnan(per_run)]
    if done.size == 0:
        return Finals(per_run, math.nan, math.nan, int(per_run.size))
    return Finals(per_run, float(done.mean()), float(done.std()), int(per_run.size - done.size))

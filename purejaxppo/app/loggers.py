"""Live logs: TensorBoard event files and Weights & Biases runs, written between chunks.

Each logger gets every chunk of updates as it finishes (``{name: [num_seeds, n]}``) and writes
one series per seed, with the update number as the step. Both are optional extras; asking for
one that is not installed is one line naming the ``pip install`` that fixes it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"


class LoggerError(ValueError):
    """A logger cannot be used; the message is one line with the fix."""


class Logger(Protocol):
    def write(self, first_update: int, chunk: Mapping[str, np.ndarray]) -> None: ...

    def close(self) -> None: ...


def check_available(tensorboard: bool, wandb: bool) -> None:
    """Raises a :class:`LoggerError` for a requested logger whose package is missing."""
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise LoggerError("--tensorboard needs the tensorboard package; pip install "
                          "'purejaxppo[tensorboard]'")
    if wandb and importlib.util.find_spec("wandb") is None:
        raise LoggerError("--wandb needs the wandb package; pip install 'purejaxppo[wandb]'")


class TensorBoardLogger:
    """One event file per seed under ``run_dir/tensorboard/seed_<n>/``: every metric as a scalar
    per update (tag ``purejaxppo/<name>``), and the run's settings as text at step 0."""

    def __init__(self, run_dir: Path, seeds: Sequence[int], settings: Mapping[str, Any]) -> None:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.plugins.text import summary_v2 as text_summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event = event_pb2.Event
        self._writers = [EventFileWriter(str(run_dir / TENSORBOARD_DIR / f"seed_{s}"))
                         for s in seeds]
        text = "```\n" + json.dumps(dict(settings), indent=2) + "\n```"
        for writer in self._writers:
            writer.add_event(self._event(wall_time=time.time(), step=0,
                                         summary=text_summary.text_pb("config", text)))

    def write(self, first_update: int, chunk: Mapping[str, np.ndarray]) -> None:
        from tensorboard.compat.proto import summary_pb2

        now = time.time()
        n = next(iter(chunk.values())).shape[1]
        for i, writer in enumerate(self._writers):
            for u in range(n):
                values = [summary_pb2.Summary.Value(tag=f"purejaxppo/{k}",
                                                    simple_value=float(v[i, u]))
                          for k, v in chunk.items() if math.isfinite(float(v[i, u]))]
                writer.add_event(self._event(wall_time=now, step=first_update + u + 1,
                                             summary=summary_pb2.Summary(value=values)))
            writer.flush()

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


def wandb_mode() -> str:
    """``WANDB_MODE`` when set; else ``"online"`` when the user logged in to W&B
    (``WANDB_API_KEY`` or ``api.wandb.ai`` in ``~/.netrc``); else ``"offline"``."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return os.environ.get("WANDB_MODE", "online")
    netrc = Path.home() / ".netrc"
    try:
        if "api.wandb.ai" in netrc.read_text():
            return "online"
    except OSError:
        pass
    return "offline"


class WandbLogger:
    """One W&B run per seed (grouped by the run directory's name), in ``run_dir/wandb``."""

    def __init__(self, run_dir: Path, seeds: Sequence[int], settings: Mapping[str, Any]) -> None:
        import wandb

        folder = run_dir / WANDB_DIR
        folder.mkdir(exist_ok=True)
        self._runs = [wandb.init(project=os.environ.get("WANDB_PROJECT", "purejaxppo"),
                                 group=run_dir.name, name=f"{run_dir.name}-seed{s}",
                                 config={**settings, "seed_number": s}, dir=str(folder),
                                 mode=wandb_mode(), reinit="create_new")
                      for s in seeds]

    def write(self, first_update: int, chunk: Mapping[str, np.ndarray]) -> None:
        n = next(iter(chunk.values())).shape[1]
        for i, run in enumerate(self._runs):
            for u in range(n):
                run.log({k: float(v[i, u]) for k, v in chunk.items()
                         if math.isfinite(float(v[i, u]))}, step=first_update + u + 1)

    def close(self) -> None:
        for run in self._runs:
            run.finish()


def open_loggers(run_dir: Path, seeds: Sequence[int], settings: Mapping[str, Any],
                 tensorboard: bool, wandb: bool) -> list[Logger]:
    """The loggers asked for (:func:`check_available` first)."""
    check_available(tensorboard, wandb)
    loggers: list[Logger] = []
    if tensorboard:
        loggers.append(TensorBoardLogger(run_dir, seeds, settings))
    if wandb:
        loggers.append(WandbLogger(run_dir, seeds, settings))
    return loggers

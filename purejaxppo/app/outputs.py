"""What a run leaves on disk: config.json, metrics.csv, summary.json, returns.png.

Every file is written atomically (a temp file in the same directory, fsync, ``os.replace``), so a
reader, or a run killed half-way, never sees a partial file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from purejaxppo.metrics import COMMON_METRICS

CHECKPOINT_DIR = "checkpoints"
"""The run directory's folder of checkpoints (:mod:`purejaxppo.app.checkpoint`)."""
LATEST = "latest"
"""The file in it naming the newest checkpoint."""

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "returns.png"
SEARCH_FILE = "search.csv"
PBT_PLOT_FILE = "pbt.png"
BEST_CONFIG_FILE = "best_config.json"

def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Writes ``data`` to ``path`` so that ``path`` holds either the old or the new contents."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open, unlike mkstemp, leaves the permissions to the umask (readable outputs).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | Path, data: Any) -> None:
    """Atomically writes ``data`` as indented JSON."""
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def metrics_csv(metrics: Mapping[str, np.ndarray], seeds: Sequence[Any],
                first_update: int = 0, label: str | tuple[str, ...] = "seed") -> str:
    """One row per update and seed: ``update, seed, env_steps``, then every other metric.

    Args:
        metrics: name -> ``[num_seeds, num_updates]`` array (``env_steps`` among them).
        seeds: the seed of each row of the arrays (a tuple of ids when ``label`` is a tuple).
        first_update: updates before the first column (rows are numbered from this + 1).
        label: the name of the seed column; a tuple names several id columns (a search's
            ``sample, seed``).
    """
    labels = (label,) if isinstance(label, str) else tuple(label)
    ids = [(s,) if isinstance(label, str) else tuple(s) for s in seeds]
    order = ["env_steps", *(k for k in COMMON_METRICS if k != "env_steps")]
    names = [k for k in order if k in metrics] + [k for k in metrics if k not in order]
    arrays = [np.asarray(metrics[k]) for k in names]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["update", *labels, *names])
    num_updates = arrays[0].shape[1]
    for u in range(num_updates):
        for i, row_ids in enumerate(ids):
            writer.writerow([first_update + u + 1, *row_ids, *(_cell(a[i, u]) for a in arrays)])
    return out.getvalue()


def append_metrics_csv(path: str | Path, chunk: Mapping[str, np.ndarray], seeds: Sequence[int],
                       first_update: int, header: bool) -> None:
    """Appends the rows of one chunk of updates to ``path`` (one ``write`` of whole lines,
    flushed), so the file grows while training runs; ``header`` starts the file afresh. The file
    is rewritten atomically when the run ends.

    Args:
        chunk: name -> ``[num_seeds, chunk_updates]``.
        first_update: updates done before the chunk (its rows are numbered from this + 1).
    """
    text = metrics_csv(chunk, seeds, first_update)
    if not header:
        text = text.split("\n", 1)[1]
    with open(path, "w" if header else "a") as f:
        f.write(text)


def _cell(x: np.generic) -> str:
    # 9 significant digits round-trip a float32 exactly.
    return str(int(x)) if np.issubdtype(x.dtype, np.integer) else f"{float(x):.9g}"


def plot_returns(path: str | Path, env_steps: np.ndarray, episode_return: np.ndarray,
                 title: str) -> None:
    """Learning curve, mean ± std over seeds, as a PNG (Agg canvas: no display, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mean, std = episode_return.mean(axis=0), episode_return.std(axis=0)
    fig = Figure(figsize=(6.4, 4.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(env_steps, mean, color="C0", lw=1.5,
            label=f"mean of {episode_return.shape[0]} seeds" if len(episode_return) > 1 else None)
    if len(episode_return) > 1:
        ax.fill_between(env_steps, mean - std, mean + std, color="C0", alpha=0.25, lw=0,
                        label="± std")
        ax.legend(loc="best", frameon=False)
    ax.set(xlabel="environment steps (per seed)", ylabel="episode return", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())


def rows_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Tidy rows (dicts with the same keys) as CSV; None is an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(rows[0]))
    for row in rows:
        writer.writerow(["" if v is None else f"{v:.9g}" if isinstance(v, float) else v
                         for v in row.values()])
    return out.getvalue()


def plot_pbt(path: str | Path, env_steps: np.ndarray, episode_return: np.ndarray,
             best: int, best_lr: np.ndarray, title: str) -> None:
    """PBT's picture: every member's return over time (the best in colour), and the learning
    rate the best member's final parameters were trained with (along its lineage)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 6.0), dpi=110)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    for i, ret in enumerate(episode_return):
        if i != best:
            top.plot(env_steps, ret, color="0.6", lw=0.8, alpha=0.7)
    top.plot(env_steps, episode_return[best], color="C3", lw=1.6, label=f"best (member {best})")
    top.plot([], [], color="0.6", lw=0.8, label="other members")
    top.legend(loc="best", frameon=False)
    top.set(ylabel="episode return", title=title)
    bottom.plot(env_steps, best_lr, color="C3", lw=1.4)
    bottom.set(xlabel="environment steps (per member)", ylabel="learning rate (best)",
               yscale="log")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())


def format_table(rows: Sequence[tuple[str, str]]) -> str:
    """Two aligned columns."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)

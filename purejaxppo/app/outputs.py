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

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "returns.png"

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


def metrics_csv(metrics: Mapping[str, np.ndarray], seeds: Sequence[int],
                first_update: int = 0) -> str:
    """One row per update and seed: ``update, seed, env_steps``, then every other metric.

    Args:
        metrics: name -> ``[num_seeds, num_updates]`` array (``env_steps`` among them).
        seeds: the seed of each row of the arrays.
        first_update: updates before the first column (rows are numbered from this + 1).
    """
    order = ["env_steps", *(k for k in COMMON_METRICS if k != "env_steps")]
    names = [k for k in order if k in metrics] + [k for k in metrics if k not in order]
    arrays = [np.asarray(metrics[k]) for k in names]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["update", "seed", *names])
    num_updates = arrays[0].shape[1]
    for u in range(num_updates):
        for i, seed in enumerate(seeds):
            writer.writerow([first_update + u + 1, seed, *(_cell(a[i, u]) for a in arrays)])
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


def format_table(rows: Sequence[tuple[str, str]]) -> str:
    """Two aligned columns."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)

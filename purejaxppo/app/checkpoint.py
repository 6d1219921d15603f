"""Checkpoints: the whole train state of every seed, and the metrics so far, in one file.

Layout of a run directory::

    config.json                       the resolved settings (needed to rebuild the state)
    checkpoints/ckpt-00000976.msgpack one file per save, named by the updates done
    checkpoints/latest                the file name of the newest checkpoint

A checkpoint is a msgpack map (``flax.serialization``) of ``{"format", "update", "state",
"metrics"}``. ``state`` is the train-state pytree flattened to ``{path: array}`` (path as
``jax.tree_util.keystr`` writes it) with typed PRNG keys stored as their key data. Restoring
fills a template state built by ``init`` for the same config, checking every path, shape and
dtype, so a checkpoint from another config is refused instead of silently misread.

Both the checkpoint and the ``latest`` pointer are written atomically (temp file, fsync,
``os.replace``): a run killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from purejaxppo.app.outputs import CHECKPOINT_DIR, LATEST, atomic_write

FORMAT = "purejaxppo-checkpoint/2"


class CheckpointError(ValueError):
    """A missing, corrupt or mismatched checkpoint; the message is one line with the fix."""


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def flatten_state(tree: Any) -> dict[str, np.ndarray]:
    """``{keystr(path): host array}`` for every leaf; typed keys become their key data."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat[jax.tree_util.keystr(path)] = np.asarray(
            jax.random.key_data(leaf) if _is_key(leaf) else leaf)
    return flat


def unflatten_state(template: Any, flat: Mapping[str, Any]) -> Any:
    """The inverse of :func:`flatten_state`, into the structure of ``template``.

    ``template`` may hold arrays or ``jax.ShapeDtypeStruct`` leaves (``jax.eval_shape`` of an
    init function builds one without compiling or running anything).

    Raises:
        CheckpointError: a path of ``template`` is missing from ``flat`` (or extra in it), or an
            array has another shape or dtype than the template's.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    restored = []
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        if name not in flat:
            raise CheckpointError(f"the checkpoint has no {name}: it was written for another "
                                  "config or purejaxppo version")
        value = np.asarray(flat[name])
        expected = jax.eval_shape(jax.random.key_data, leaf) if _is_key(leaf) else leaf
        if value.shape != expected.shape or value.dtype != expected.dtype:
            raise CheckpointError(
                f"the checkpoint's {name} is {value.dtype}{list(value.shape)} but the config "
                f"needs {expected.dtype}{list(expected.shape)}: it was written for another config "
                "(resume or evaluate it with the config.json it was trained with)")
        if _is_key(leaf):
            # Keys are made with the default PRNG implementation; refuse any other.
            value = jax.random.wrap_key_data(value)
            if value.dtype != leaf.dtype:
                raise CheckpointError(f"the checkpoint's {name} is a {value.dtype} key but the "
                                      f"config needs {leaf.dtype}: set jax_default_prng_impl as "
                                      "when it was written")
        restored.append(jnp.asarray(value))
    extra = set(flat) - {jax.tree_util.keystr(p) for p, _ in leaves}
    if extra:
        raise CheckpointError(f"the checkpoint has {len(extra)} entries the config does not "
                              f"(e.g. {sorted(extra)[0]}): it was written for another config (resume or "
                              "evaluate it with the config.json it was trained with)")
    return jax.tree_util.tree_unflatten(treedef, restored)


def to_bytes(state: Any, metrics: Mapping[str, Any], update: int) -> bytes:
    """Serialises a train state and its metrics history ``{name: [seeds, updates]}``."""
    return serialization.msgpack_serialize({
        "format": FORMAT,
        "update": int(update),
        "state": flatten_state(jax.device_get(state)),
        "metrics": {k: np.asarray(v) for k, v in metrics.items()},
    })


def from_bytes(template: Any, data: bytes, name: str = "checkpoint"
               ) -> tuple[Any, dict[str, np.ndarray], int]:
    """``(state, metrics, update)`` from :func:`to_bytes` output, restored into ``template``."""
    try:
        raw = serialization.msgpack_restore(data)
    except Exception:  # msgpack raises several types for truncated or garbled data
        raw = None
    if (isinstance(raw, dict) and isinstance(raw.get("format"), str)
            and raw["format"].startswith("purejaxppo-checkpoint/") and raw["format"] != FORMAT):
        raise CheckpointError(f"{name} was written by another purejaxppo version (format "
                              f"{raw['format']}, this version reads {FORMAT}); train again with "
                              "this version, or evaluate it with the version that wrote it")
    if (not isinstance(raw, dict) or raw.get("format") != FORMAT
            or not isinstance(raw.get("state"), dict) or not isinstance(raw.get("metrics"), dict)
            or not isinstance(raw.get("update"), int)):
        raise CheckpointError(f"{name} is corrupt or not a purejaxppo checkpoint; point "
                              f"{CHECKPOINT_DIR}/{LATEST} at an earlier checkpoint or train again")
    state = unflatten_state(template, raw["state"])
    return state, {k: np.asarray(v) for k, v in raw["metrics"].items()}, int(raw["update"])


def checkpoint_name(update: int) -> str:
    """File name of the checkpoint taken after ``update`` updates."""
    return f"ckpt-{update:08d}.msgpack"


def save(run_dir: str | Path, state: Any, metrics: Mapping[str, Any], update: int,
         keep: int = 0) -> Path:
    """Writes a checkpoint into ``run_dir/checkpoints`` and points ``latest`` at it.

    Args:
        keep: keep only the newest ``keep`` checkpoints (older ones are deleted after ``latest``
            points at the new one); 0 keeps every one.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(exist_ok=True)
    path = folder / checkpoint_name(update)
    atomic_write(path, to_bytes(state, metrics, update))
    atomic_write(folder / LATEST, path.name + "\n")
    if keep > 0:
        for old in all_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def all_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoint files of ``run_dir``, oldest first (by the updates in their names); files
    not named as :func:`checkpoint_name` names them are not checkpoints."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("ckpt-*.msgpack")
                  if re.fullmatch(r"ckpt-\d{8}\.msgpack", p.name))


def checkpoint_at(run_dir: str | Path, update: int) -> Path:
    """The checkpoint taken after ``update`` updates; a :class:`CheckpointError` naming the
    available ones if there is none."""
    path = Path(run_dir) / CHECKPOINT_DIR / checkpoint_name(update)
    if not path.is_file():
        have = [int(p.stem.split("-")[1]) for p in all_checkpoints(run_dir)]
        raise CheckpointError(f"{str(run_dir)!r} has no checkpoint at update {update}; it has "
                              f"{', '.join(map(str, have)) or 'none'}")
    return path


def latest(run_dir: str | Path) -> Path:
    """Path of the newest checkpoint of ``run_dir``; a :class:`CheckpointError` if none."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    try:
        name = (folder / LATEST).read_text().strip()
    except FileNotFoundError:
        raise CheckpointError(f"{str(run_dir)!r} has no checkpoint ({CHECKPOINT_DIR}/{LATEST} is "
                              "missing); give the directory of a run that saved one") from None
    except (OSError, UnicodeDecodeError) as e:  # a directory, unreadable, not text
        why = getattr(e, "strerror", None) or "not a file name"
        raise CheckpointError(f"cannot read {folder / LATEST} ({why}); write the name of an "
                              "existing checkpoint file into it") from None
    path = folder / name
    if not name or "/" in name or not path.is_file():
        raise CheckpointError(f"{folder / LATEST} points at {name!r}, which does not exist; "
                              "write the name of an existing checkpoint file into it")
    return path


def restored_update(run_dir: str | Path) -> int:
    """Updates done in the newest checkpoint of ``run_dir`` (its file read, nothing restored)."""
    path = latest(run_dir)
    try:
        raw = serialization.msgpack_restore(path.read_bytes())
        return int(raw["update"])
    except Exception:  # msgpack raises several types for truncated or garbled data
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a purejaxppo "
                              f"checkpoint; point {CHECKPOINT_DIR}/{LATEST} at an earlier "
                              "checkpoint or train again") from None


def incomplete_writes(run_dir: str | Path) -> list[Path]:
    """Temporary files of checkpoint writes that never finished (a run killed mid-write).

    They are never read: ``latest`` still names the last complete checkpoint.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    return sorted(folder.glob(".*.tmp")) if folder.is_dir() else []


def restore(run_dir: str | Path, template: Any, update: int | None = None
            ) -> tuple[Any, dict[str, np.ndarray], int]:
    """``(state, metrics, update)`` of the newest checkpoint of ``run_dir`` (or the one taken
    after ``update`` updates), into ``template``."""
    path = latest(run_dir) if update is None else checkpoint_at(run_dir, update)
    return from_bytes(template, path.read_bytes(), name=f"checkpoint {str(path)!r}")

"""The run directory's life: claimed under a lock, written, and only then put in place.

A new run writes straight into its (new) directory. A run that replaces an old one
(``--overwrite``) writes into a hidden sibling (``.NAME.new-PID``) and swaps it in only when it
has finished, or was interrupted and saved its work: until then the old run is untouched. A lock
file (``.NAME.lock``, holding the writer's pid) makes a second writer of the same directory fail
with one line; a lock whose process is gone is taken over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import NamedTuple


class RunDirError(ValueError):
    """The run directory cannot be used; the message is one line with the fix."""


class Claim(NamedTuple):
    """A run directory held by this process."""

    final: Path
    """Where the run ends up."""
    work: Path
    """Where it is written now: ``final`` itself, or a hidden sibling when replacing."""
    lock: Path
    """The lock file (removed by :func:`release`)."""


def _lock_path(final: Path) -> Path:
    return final.parent / f".{final.name}.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take_lock(lock: Path, final: Path) -> None:
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise RunDirError(f"another purejaxppo run (pid {pid}) is writing {str(final)!r}; "
                                  "wait for it to finish or choose another --out") from None
            try:
                lock.unlink(missing_ok=True)  # a stale lock of a process that is gone
            except IsADirectoryError:
                raise RunDirError(f"{lock} is a directory, where purejaxppo keeps the lock of "
                                  f"{str(final)!r}; remove it") from None
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        return
    raise RunDirError(f"cannot lock {str(final)!r}: {lock} keeps reappearing; remove it")


def claim(final: str | Path, replace: bool) -> Claim:
    """Locks ``final`` and creates the directory the run is written into.

    Raises:
        RunDirError: another live process holds the lock; the directory (or, without
            ``replace``, the path) exists already; a parent is a file; no permission to write.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        lock = _lock_path(final)
        _take_lock(lock, final)
    except NotADirectoryError:
        raise RunDirError(f"cannot create {str(final)!r}: a parent of it is a file; choose "
                          "another --out") from None
    except PermissionError:
        raise RunDirError(f"cannot write in {str(final.parent)!r}: permission denied; choose "
                          "another --out (or run from a writable directory)") from None
    except OSError as e:
        raise RunDirError(f"cannot create {str(final)!r}: {e.strerror}; choose another --out"
                          ) from None
    work = final.parent / f".{final.name}.new-{os.getpid()}" if replace else final
    try:
        work.mkdir()
    except FileExistsError:
        lock.unlink(missing_ok=True)
        raise RunDirError(f"output directory {str(final)!r} already exists; pass --overwrite to "
                          "replace it or choose another --out") from None
    except OSError as e:
        lock.unlink(missing_ok=True)
        raise RunDirError(f"cannot create {str(work)!r}: {e.strerror}; choose another --out"
                          ) from None
    return Claim(final=final, work=work, lock=lock)


def hold(final: str | Path) -> Claim:
    """Locks an existing run directory (to resume it) without creating anything.

    Raises:
        RunDirError: another live process holds the lock.
    """
    final = Path(final)
    lock = _lock_path(final)
    try:
        _take_lock(lock, final)
    except PermissionError:
        raise RunDirError(f"cannot write in {str(final.parent)!r}: permission denied") from None
    return Claim(final=final, work=final, lock=lock)


def commit(held: Claim) -> None:
    """Puts a replacing run in place of the old one (nothing to do for a new directory)."""
    if held.work == held.final:
        return
    old = held.final.parent / f".{held.final.name}.old-{os.getpid()}"
    if held.final.exists():
        os.replace(held.final, old)
    os.replace(held.work, held.final)
    shutil.rmtree(old, ignore_errors=True)


def abandon(held: Claim) -> None:
    """Removes what this run wrote (it produced nothing worth keeping)."""
    shutil.rmtree(held.work, ignore_errors=True)


def release(held: Claim) -> None:
    """Removes the lock."""
    with contextlib.suppress(OSError):
        held.lock.unlink()

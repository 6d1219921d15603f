"""Groups of local processes for the multi-process tests: free ports, bounded waits, no stragglers.

Every process writes its output to files (never a pipe, which could fill and block it), and a
group is always killed on exit, so a failing or hanging test leaves no process behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_environment(**extra: str) -> dict[str, str]:
    """This environment, CPU only, without device-count flags, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


class Finished:
    """One process's exit code and output."""

    def __init__(self, code: int | None, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"


class Group:
    """Processes started together; ``with Group(...) as g: results = g.wait(timeout_s)``."""

    def __init__(self, commands: Sequence[Sequence[str]], envs: Sequence[dict[str, str]],
                 logs: Path, cwd: Path | None = None) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self._files = [(logs / f"{i}.out", logs / f"{i}.err") for i in range(len(commands))]
        self._procs = []
        for command, env, (out, err) in zip(commands, envs, self._files, strict=True):
            with open(out, "w") as o, open(err, "w") as e:
                self._procs.append(subprocess.Popen(list(command), env=env, cwd=cwd, stdout=o,
                                                    stderr=e, text=True))

    def wait(self, timeout_s: float) -> list[Finished]:
        """Waits until every process exits or ``timeout_s`` passes (then kills the rest: their
        exit code is None)."""
        deadline = time.monotonic() + timeout_s
        codes = []
        for proc in self._procs:
            try:
                codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(None)
        self.kill()
        return [Finished(code, out.read_text(), err.read_text())
                for code, (out, err) in zip(codes, self._files, strict=True)]

    def kill(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

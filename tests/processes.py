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
    """This environment, CPU only, without device-count flags (other XLA flags kept), plus
    ``extra``."""
    env = dict(os.environ)
    flags = " ".join(flag for flag in env.pop("XLA_FLAGS", "").split()
                     if not flag.startswith("--xla_force_host_platform_device_count"))
    if flags:
        env["XLA_FLAGS"] = flags
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
                 logs: Path, cwd: Path | Sequence[Path] | None = None) -> None:
        """``cwd``: one working directory for all, or one per process."""
        logs.mkdir(parents=True, exist_ok=True)
        cwds = cwd if isinstance(cwd, list | tuple) else [cwd] * len(commands)
        self._files = [(logs / f"{i}.out", logs / f"{i}.err") for i in range(len(commands))]
        self._procs = []
        for command, env, where, (out, err) in zip(commands, envs, cwds, self._files, strict=True):
            with open(out, "w") as o, open(err, "w") as e:
                self._procs.append(subprocess.Popen(list(command), env=env, cwd=where, stdout=o,
                                                    stderr=e, text=True))

    def wait(self, timeout_s: float, settle_s: float = 0.0) -> list[Finished]:
        """Waits until every process exits or ``timeout_s`` passes (then kills the rest: their
        exit code is None), then ``settle_s`` more for what their children still write."""
        deadline = time.monotonic() + timeout_s
        codes = []
        for proc in self._procs:
            try:
                codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(None)
        self.kill()
        time.sleep(settle_s)
        return [Finished(code, out.read_text(), err.read_text())
                for code, (out, err) in zip(codes, self._files, strict=True)]

    def stdout(self, i: int) -> str:
        """What process ``i`` printed so far."""
        return self._files[i][0].read_text()

    def wait_for_output(self, i: int, text: str, timeout_s: float) -> bool:
        """Waits until process ``i`` printed ``text``; False after ``timeout_s`` or if it exited."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.stdout(i):
                return True
            if self._procs[i].poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def kill_process(self, i: int) -> None:
        """SIGKILL to process ``i`` (a process that dies without a word)."""
        self._procs[i].kill()
        self._procs[i].wait()

    def kill(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

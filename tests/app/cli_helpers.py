"""Running the purejaxppo command as a user does, in a subprocess, for the tests of tests/app."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path


def cli_environment() -> dict[str, str]:
    """The environment of every subprocess of the session: CPU only, and the session's one
    compilation cache (``JAX_COMPILATION_CACHE_DIR``, set by conftest.py) so that a program
    compiled by one run is read back by the next run of the same shapes instead of compiled
    again."""
    env = dict(os.environ)
    assert env.get("JAX_COMPILATION_CACHE_DIR"), "conftest.py sets the session's cache"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m purejaxppo ARGS`` in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "purejaxppo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


class Background:
    """``python -m purejaxppo ARGS`` started in ``cwd`` without waiting, so that two runs compile
    at once (one core each); :meth:`result` waits. Output goes to files, not pipes, so it can
    never block."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.args = args
        self._out, self._err = logs / "stdout.txt", logs / "stderr.txt"
        with open(self._out, "w") as out, open(self._err, "w") as err:
            self._proc = subprocess.Popen([sys.executable, "-m", "purejaxppo", *args], cwd=cwd,
                                          env=env, stdout=out, stderr=err, text=True)

    def result(self) -> subprocess.CompletedProcess:
        code = self._proc.wait(timeout=600)
        return subprocess.CompletedProcess(self._proc.args, code, self._out.read_text(),
                                           self._err.read_text())

    def stop(self) -> None:
        """Kills it if it is still running (a test failed before waiting for it)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def listing(folder: Path) -> list[str]:
    """Every path under ``folder`` (the compilation cache left out)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if "xla" not in p.as_posix())


def assert_one_line_error(code: int, out: str, err: str, expected: str) -> None:
    """Bad input: exit code 2, one line on stderr naming the problem, nothing on stdout."""
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("purejaxppo: error: ")
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err and out == ""

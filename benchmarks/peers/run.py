"""Run the peer PPO throughput benchmarks, each in its own virtualenv.

Standard library only, so it runs with the plain system python, from the
repository root::

    python -m benchmarks.peers.run [--total-timesteps N] [--peers sb3,rejax]
                                   [--num-seeds N] [--json OUT]

(``python benchmarks/peers/run.py`` works too: it imports nothing of the
project.) Other scripts import :func:`run_peers` from ``benchmarks.peers.run``.
A peer that fails to set up or to run yields ``{"peer": ..., "error": "<reason>"}``
instead of raising.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
SETUP = HERE / "setup.sh"
PEERS: dict[str, str] = {"sb3": "sb3_cartpole.py", "rejax": "rejax_cartpole.py"}
DEFAULT_TIMEOUT_S = 3600.0


def _last_line(text: str) -> str:
    """The last non-empty line of ``text``, shortened, or a placeholder."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _venv_python(peer: str) -> Path:
    return VENVS / peer / "bin" / "python"


def ensure_venv(peer: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """Run ``setup.sh`` for ``peer`` (a no-op when its venv works).

    Returns None on success, else a one-line reason. Setup output goes to stderr.
    """
    try:
        proc = subprocess.run(
            ["bash", str(SETUP), peer],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"setup failed: {exc}"
    sys.stderr.write(proc.stdout)
    if proc.returncode != 0 or not _venv_python(peer).exists():
        return f"setup failed: {_last_line(proc.stdout)}"
    return None


def run_peer(
    peer: str, total_timesteps: int, num_seeds: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S
) -> dict:
    """Set up and run one peer; return its JSON record or an error record."""
    if peer not in PEERS:
        return {"peer": peer, "error": f"unknown peer (known: {', '.join(PEERS)})"}
    reason = ensure_venv(peer, timeout_s)
    if reason is not None:
        return {"peer": peer, "error": reason}
    cmd = [str(_venv_python(peer)), str(HERE / PEERS[peer]), "--total-timesteps", str(total_timesteps)]
    if peer == "rejax":
        cmd += ["--num-seeds", str(num_seeds)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"peer": peer, "error": f"run failed: {exc}"}
    if proc.returncode != 0:
        return {"peer": peer, "error": f"exit {proc.returncode}: {_last_line(proc.stderr)}"}
    for line in reversed(proc.stdout.splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("peer") == peer:
            return record
    return {"peer": peer, "error": f"no JSON result line: {_last_line(proc.stdout + proc.stderr)}"}


def run_peers(total_timesteps: int, peers: list[str], num_seeds: int = 1) -> list[dict]:
    """Run each peer in turn; one record per peer, errors included, never raises."""
    return [run_peer(peer, total_timesteps, num_seeds) for peer in peers]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: print the records as a JSON list."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.run",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--total-timesteps", type=int, default=500_000)
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, e.g. sb3,rejax")
    parser.add_argument("--num-seeds", type=int, default=1, help="parallel seeds (rejax only)")
    parser.add_argument("--json", type=Path, default=None, help="also write the records here")
    args = parser.parse_args(argv)

    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    records = run_peers(args.total_timesteps, peers, args.num_seeds)
    text = json.dumps(records, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

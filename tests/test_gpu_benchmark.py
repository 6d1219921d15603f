"""``python -m benchmarks.gpu --smoke``: every row of the GPU benchmark at tiny sizes, on the CPU,
so that the kit cannot rot while no GPU runs it; and the conditions of its optional rows."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from processes import cpu_environment

from benchmarks import gpu

REPO = Path(__file__).resolve().parent.parent


def test_smoke_run_writes_every_row_or_its_reason(tmp_path):
    env = cpu_environment()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--smoke", "--out",
                           str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)  # 2-4 min on a 2-core CPU beside another worker
    assert proc.returncode == 0, proc.stdout + proc.stderr
    payload = json.loads((tmp_path / "gpu_smoke.json").read_text())
    rows = [(r["env"], r["seeds"]) for r in payload["rows"]]
    assert rows[:5] == [("CartPole-v1", 1), ("CartPole-v1", 2), ("CartPole-v1", 4),
                        ("Breakout-MinAtar", 1), ("Breakout-MinAtar", 2)], rows
    for r in payload["rows"]:
        assert r["compile_s"] > 0 and r["run_s"] > 0 and math.isfinite(r["steps_per_s"]), r
        assert r["updates"] == gpu.SMOKE_UPDATES and r["num_envs"] == 4, r
    # The optional rows ran, or say why not (in the JSON, the table and the output).
    labels = {r["row"] for r in payload["rows"]} | {s["row"] for s in payload["skipped"]}
    assert {c.label for c in gpu.CASES} == labels
    table = (tmp_path / "gpu_smoke.md").read_text()
    for s in payload["skipped"]:
        assert s["reason"] and f"skipped {s['row']}: {s['reason']}" in proc.stdout
        assert f"Skipped {s['row']}: {s['reason']}." in table
    assert "final return" in table and table.count("| CartPole-v1 |") == 3
    # The Brax row (when it ran) ran its smoke env under its own label.
    brax_rows = [r for r in payload["rows"] if r["row"].startswith(gpu.BRAX_ENV)]
    assert all(r["env"] == r["ran_as"] == gpu.BRAX_SMOKE_ENV for r in brax_rows), brax_rows
    for r in brax_rows:  # and the table says which env ran
        assert f"| {r['row']} (this run: {gpu.BRAX_SMOKE_ENV}) |" in table, table


def test_optional_rows_follow_what_is_installed(monkeypatch):
    import importlib.util

    from purejaxppo import envs, networks

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "brax" else real(name, *a))
    assert "brax is not installed" in gpu.brax_missing()
    if real("brax") is not None:  # the envs extra: the Brax row runs
        monkeypatch.setattr(importlib.util, "find_spec", real)
        assert gpu.brax_missing() is None
    # brax "found" but the env cannot be built: the row says why.
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "brax" else real(name, *a))

    def cannot_build(env_id: str):
        raise ValueError(f"{env_id}: no such environment here")

    monkeypatch.setattr(envs, "make", cannot_build)
    assert gpu.brax_missing() == ("purejaxppo.envs.make('brax:halfcheetah') failed: "
                                  "brax:halfcheetah: no such environment here")
    monkeypatch.setattr(networks, "registered_networks", lambda: ["mlp", "cnn"])
    assert "no network named 'gru'" in gpu.gru_missing()
    monkeypatch.setattr(networks, "registered_networks", lambda: ["mlp", "cnn", "gru"])
    assert gpu.gru_missing() is None


def test_full_sizes_are_the_ones_a_gpu_user_asked_for():
    seeds = [(c.env, c.seeds, c.config is None) for c in gpu.CASES]
    assert seeds[:5] == [("CartPole-v1", 1, True), ("CartPole-v1", 256, True),
                         ("CartPole-v1", 2048, True), ("Breakout-MinAtar", 1, True),
                         ("Breakout-MinAtar", 64, True)]
    assert gpu.BRAX_CONFIG["num_envs"] == 2048 and gpu.CASES[5].env == gpu.BRAX_ENV
    assert gpu.CASES[6].config(num_envs=4).network == "gru"

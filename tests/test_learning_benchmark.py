"""``python -m benchmarks.learning``: its rows, checks, per-seed curves, figure and row keys."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from processes import cpu_environment

from benchmarks import learning
from purejaxppo.app.presets import presets

REPO = Path(__file__).resolve().parent.parent


def test_rows_cover_every_gymnax_preset_at_its_own_budget():
    gymnax = [name for name in presets() if ":" not in name]
    assert list(learning.ROWS) == gymnax
    for env, spec in learning.ROWS.items():
        assert spec.seeds == (4 if env.endswith("-MinAtar") else 16), env
        assert learning.row_config(env, None, None).total_timesteps == \
            presets()[env].config["total_timesteps"], env
    assert learning.row_config("CartPole-v1", 5000, None).total_timesteps == 4608  # 9 x 512
    assert learning.row_config("CartPole-v1", 1, None).total_timesteps == 512
    assert learning.row_key("Seaquest-MinAtar", "mlp") == "Seaquest-MinAtar"
    assert learning.row_key("Seaquest-MinAtar", "cnn") == "Seaquest-MinAtar [cnn]"
    assert learning.row_config("Seaquest-MinAtar", None, "cnn").network == "cnn"
    # The Asterix, Breakout, Freeway and SpaceInvaders presets use the CNN: their MLP rows are
    # the overrides.
    for env in ("Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar"):
        assert learning.row_key(env, "cnn") == env
        assert learning.row_key(env, "mlp") == f"{env} [mlp]"
        assert learning.row_config(env, None, None).network == "cnn"


def test_recorded_rows_and_curves_agree_with_each_other_and_the_presets():
    """The tracked results: every row has its curves under the same key, from the same run
    (network, seeds, commit), and its key names the network the way ``row_key`` does today."""
    results = REPO / "benchmarks" / "results"
    rows = {r["key"]: r for r in json.loads((results / "learning.json").read_text())["rows"]}
    curves = json.loads((results / "learning_curves.json").read_text())["rows"]
    assert set(rows) == set(curves)
    for key, row in rows.items():
        c = curves[key]
        assert (c["env"], c["network"], c["seeds"], c.get("commit")) == \
            (row["env"], row["network"], row["seeds"], row["commit"]), key
        assert learning.row_key(row["env"], row["network"]) == key
        assert len(c["episode_return"]) == row["seeds"], key
        final = [r[-1] for r in c["episode_return"]]
        assert all(math.isfinite(x) for x in final), key


def test_a_row_passes_on_the_published_figure_and_its_floor():
    pendulum = learning.ROWS["Pendulum-v1"]
    ok = learning.judge(pendulum, np.array([-120.0, -125.0, -128.0]))
    assert ok["passed"] and ok["target_met"] and ok["worst_seed"] == -128.0
    assert ok["criterion"] == "mean >= -130 (published), every seed >= -500"
    # Above the row's own target (-150) but below the published figure (-130).
    below = learning.judge(pendulum, np.array([-140.0, -140.0]))
    assert below["passed"] is False and below["target_met"] is True
    # The mean is fine, one seed is below the floor.
    stalled = learning.judge(pendulum, np.array([-20.0, -20.0, -20.0, -510.0]))
    assert stalled["passed"] is False and stalled["target_met"] is False
    # A seed without a final return fails the floor.
    assert learning.judge(pendulum, np.array([-120.0, np.nan]))["passed"] is False
    seaquest = learning.judge(learning.ROWS["Seaquest-MinAtar"], np.array([3.0]))
    assert seaquest["passed"] is None and seaquest["criterion"] == "report"


def test_curve_points_keep_first_and_last_update():
    assert learning.curve_points(8).tolist() == list(range(8))
    points = learning.curve_points(1220)
    assert len(points) <= learning.CURVE_POINTS and points[0] == 0 and points[-1] == 1219
    assert np.all(np.diff(points) > 0)


def test_cartpole_row_writes_its_row_curves_and_figure(tmp_path):
    env = cpu_environment()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.learning", "--envs", "CartPole-v1",
                           "--seeds", "2", "--steps", "4096", "--out", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    [row] = json.loads((tmp_path / "learning.json").read_text())["rows"]
    # 4096 steps do not reach the published 500: the row fails, and the exit status says so.
    assert proc.returncode == (0 if row["passed"] else 1), proc.stdout + proc.stderr
    assert row["key"] == "CartPole-v1" and row["network"] == "mlp"
    assert row["total_timesteps"] == 4096 and row["num_updates"] == 8 and row["seeds"] == 2
    assert len(row["final_returns"]) == 2 and all(math.isfinite(v) for v in row["final_returns"])
    assert row["worst_seed"] == min(row["final_returns"])
    assert row["published"] == 500 and row["target"] == 475
    assert row["criterion"] == "mean >= 500 (published)" and row["passed"] is False
    assert row["run_s"] > 0 and row["compile_s"] > 0 and row["wall_s"] >= row["run_s"]
    assert row["steps_per_s"] > 0 and row["devices"] >= 1 and row["jax"]
    assert row["commit"] and row["commit"].split("+")[0].isalnum()

    curves = json.loads((tmp_path / "learning_curves.json").read_text())["rows"]
    c = curves["CartPole-v1"]
    assert c["env_steps"] == [512 * (i + 1) for i in range(8)]
    assert len(c["episode_return"]) == 2
    assert all(len(seed) == 8 and all(v is not None and math.isfinite(v) for v in seed)
               for seed in c["episode_return"])
    assert c["published"] == 500 and c["commit"] == row["commit"] and c["run_s"] == row["run_s"]

    assert (tmp_path / "learning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "learning.md").read_text()
    assert "| CartPole-v1 | mlp | 4,096 | 2 |" in table and "NO: mean >= 500 (published)" in table
    assert table in proc.stdout


def test_network_override_is_a_row_of_its_own(tmp_path, monkeypatch):
    # A row recorded earlier with the preset's network (Asterix's preset uses the CNN), kept by
    # the merge.
    cnn = {"key": "Asterix-MinAtar", "env": "Asterix-MinAtar", "network": "cnn",
           "total_timesteps": 128, "seeds": 1, "final_return_mean": 1.0,
           "final_return_std": 0.0, "run_s": 1.0, "passed": False}
    cnn_curve = {"env": "Asterix-MinAtar", "network": "cnn", "published": 15.0,
                 "env_steps": [64, 128], "episode_return": [[None, 1.0]]}
    learning.merge(tmp_path, [cnn], {"Asterix-MinAtar": cnn_curve})

    # The preset's 64 envs x 128 steps shrunk to 4 x 16 (one update), so that the network trains
    # in seconds; in this process, whose JAX devices are fixed already.
    full = learning.row_config
    monkeypatch.setattr(learning, "row_config", lambda env, steps, network: full(
        env, steps, network).replace(num_envs=4, num_steps=16, num_minibatches=2,
                                     total_timesteps=64))
    monkeypatch.setattr(learning, "use_all_cores", lambda: 1)
    assert learning.main(["--envs", "Asterix-MinAtar", "--network", "mlp", "--seeds", "1",
                          "--out", str(tmp_path)]) == 1  # far below the published 15

    rows = {r["key"]: r for r in json.loads((tmp_path / "learning.json").read_text())["rows"]}
    assert set(rows) == {"Asterix-MinAtar", "Asterix-MinAtar [mlp]"}
    assert rows["Asterix-MinAtar"] == cnn
    mlp = rows["Asterix-MinAtar [mlp]"]
    assert mlp["network"] == "mlp" and mlp["config"]["network"] == "mlp" and mlp["seeds"] == 1
    curves = json.loads((tmp_path / "learning_curves.json").read_text())["rows"]
    assert set(curves) == {"Asterix-MinAtar", "Asterix-MinAtar [mlp]"}
    assert curves["Asterix-MinAtar [mlp]"]["env_steps"] == [64]
    table = (tmp_path / "learning.md").read_text()
    assert "| Asterix-MinAtar | cnn |" in table and "| Asterix-MinAtar | mlp |" in table
    assert (tmp_path / "learning.png").exists()

    # --plot-only redraws from the files alone.
    (tmp_path / "learning.png").unlink()
    assert learning.main(["--plot-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "learning.png").exists()


def test_a_row_trained_in_parts_joins_into_one(tmp_path, monkeypatch, capsys):
    """``--first-seed``: seeds 0-1 and then 2-3, or 2-3 and then 0-1, make the row that 4 seeds
    at once make (seed ``i``'s key does not depend on the seed count); a part that would leave
    a gap is refused before training, with one line and exit status 2; a part the recorded row
    no longer fits when it finishes is kept in its own file, and ``--merge`` joins it later."""
    monkeypatch.setattr(learning, "use_all_cores", lambda: 1)  # this process's devices are set
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    common = ["--envs", "CartPole-v1", "--steps", "2048", "--seeds", "2"]
    learning.main(["--envs", "CartPole-v1", "--steps", "2048", "--seeds", "4", "--out", str(whole)])
    learning.main([*common, "--out", str(parts)])
    learning.main([*common, "--first-seed", "2", "--out", str(parts)])

    [one] = json.loads((whole / "learning.json").read_text())["rows"]
    [joined] = json.loads((parts / "learning.json").read_text())["rows"]
    assert joined["seeds"] == 4 and joined["first_seed"] == 0
    np.testing.assert_allclose(joined["final_returns"], one["final_returns"], rtol=1e-5)
    per_seed = np.asarray(joined["final_returns"])
    assert joined["final_return_mean"] == pytest.approx(per_seed.mean())
    assert joined["final_return_std"] == pytest.approx(per_seed.std())
    assert joined["worst_seed"] == per_seed.min()
    assert [(p["first_seed"], p["seeds"]) for p in joined["parts"]] == [(0, 2), (2, 2)]
    assert joined["run_s"] == pytest.approx(sum(p["run_s"] for p in joined["parts"]), abs=0.02)
    curves = json.loads((parts / "learning_curves.json").read_text())["rows"]["CartPole-v1"]
    one_curves = json.loads((whole / "learning_curves.json").read_text())["rows"]["CartPole-v1"]
    assert curves["seeds"] == 4 and curves["env_steps"] == one_curves["env_steps"]
    np.testing.assert_allclose(curves["episode_return"], one_curves["episode_return"], rtol=1e-5)
    assert "| CartPole-v1 | mlp | 2,048 | 4 |" in (parts / "learning.md").read_text()

    # Seeds 6.. would leave a gap after seed 3: refused, the files untouched.
    before = (parts / "learning.json").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        learning.main([*common, "--first-seed", "6", "--out", str(parts)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--first-seed 4" in error and "seeds 0..3" in error
    assert (parts / "learning.json").read_bytes() == before
    with pytest.raises(ValueError, match="neither continue"):
        learning.merge(parts, [{**one, "first_seed": 1}], {})
    assert (parts / "learning.json").read_bytes() == before

    # Other settings do not join either; the same first seed replaces the row.
    assert learning.continues(joined, {**one, "first_seed": 4, "config": {"lr": 1}}) is None
    assert learning.continues(joined, {**one, "first_seed": 4}) == "append"
    assert learning.continues(joined, one) == "replace"
    assert learning.continues(None, one) == "replace"

    # Seeds 2-3 first, then 0-1: joined in seed order, the same row again. The recorded row
    # changes while 0-1 train (another run's row with other settings), so the finished part is
    # kept aside (exit status 1) and ``--merge`` joins it once the recorded row fits.
    backwards = tmp_path / "backwards"
    backwards.mkdir()
    learning.main([*common, "--first-seed", "2", "--out", str(backwards)])
    [later] = json.loads((backwards / "learning.json").read_text())["rows"]
    real_run = learning.run

    def run_while_another_writes(*args, **kwargs):
        result = real_run(*args, **kwargs)
        learning.merge(backwards, [{**later, "config": {**later["config"], "lr": 1.0}}], {})
        return result

    monkeypatch.setattr(learning, "run", run_while_another_writes)
    assert learning.main([*common, "--out", str(backwards)]) == 1
    monkeypatch.setattr(learning, "run", real_run)
    [kept] = backwards.glob("learning-unmerged-*.json")
    assert kept.name == "learning-unmerged-CartPole-v1-0-1.json"
    saved = json.loads(kept.read_text())  # the same seeds kept again: a second file
    again = learning.keep_unmerged(backwards, saved["rows"][0], saved["curves"]["CartPole-v1"])
    assert again.name == "learning-unmerged-CartPole-v1-0-1-2.json"
    assert json.loads(kept.read_text()) == saved and json.loads(again.read_text()) == saved
    again.unlink()
    assert "this row is kept in" in capsys.readouterr().err
    [other] = json.loads((backwards / "learning.json").read_text())["rows"]
    assert other["config"]["lr"] == 1.0 and other["seeds"] == 2
    with pytest.raises(SystemExit) as exit_:  # still does not fit: one line, exit 2
        learning.main(["--merge", str(kept), "--out", str(backwards)])
    assert exit_.value.code == 2 and kept.exists()
    assert "neither continue" in capsys.readouterr().err.strip().splitlines()[-1]

    learning.merge(backwards, [later], {})  # the recorded row as it was
    assert learning.main(["--merge", str(kept), "--out", str(backwards)]) == 0
    assert not kept.exists()
    [prepended] = json.loads((backwards / "learning.json").read_text())["rows"]
    assert prepended["seeds"] == 4 and prepended["first_seed"] == 0
    np.testing.assert_allclose(prepended["final_returns"], one["final_returns"], rtol=1e-5)
    assert [(p["first_seed"], p["seeds"]) for p in prepended["parts"]] == [(0, 2), (2, 2)]
    curves = json.loads((backwards / "learning_curves.json").read_text())["rows"]["CartPole-v1"]
    np.testing.assert_allclose(curves["episode_return"], one_curves["episode_return"], rtol=1e-5)

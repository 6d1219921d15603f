"""``purejaxppo search``: real subprocesses, real (tiny) searches, the files they leave."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_helpers import Background, assert_one_line_error, cli_environment, listing, read_csv, run_cli
from conftest import TINY_FLAGS

from purejaxppo import PPOConfig
from purejaxppo.app import cli
from purejaxppo.metrics import final_return

UPDATES = 8
SPACE = {"lr": ["log_uniform", 1e-4, 1e-2], "policy_loss": ["choice", ["ppo_clip", "kl_penalty"]]}
SPACE_YAML = "lr: [log_uniform, 1.0e-4, 1.0e-2]\nent_coef: [uniform, 0.0, 0.05]\n"


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    return cli_environment()


@pytest.fixture(scope="module")
def searches(tmp_path_factory, cli_env):
    """A PBT search (JSON space) and a random search (YAML space, 2 seeds per sample), run at
    once (one core each)."""
    work = tmp_path_factory.mktemp("search")
    (work / "space.json").write_text(json.dumps(SPACE))
    (work / "space.yaml").write_text(SPACE_YAML)
    logs = [tmp_path_factory.mktemp(n) for n in ("pbt-logs", "random-logs")]
    pbt = Background(["search", "--method", "pbt", "--population", "4", "--ready-every", "2",
                      "--space", "space.json", *TINY_FLAGS, "--out", "PBT"], work, cli_env, logs[0])
    rnd = Background(["search", "--method", "random", "--population", "3", "--num-seeds", "2",
                      "--seed", "3", "--space", "space.yaml", *TINY_FLAGS, "--out", "RANDOM"],
                     work, cli_env, logs[1])
    try:
        procs = pbt.result(), rnd.result()
    finally:
        pbt.stop()
        rnd.stop()
    for proc in procs:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return work, procs


def member_returns(rows: list[dict[str, str]], column: str, ids: list) -> np.ndarray:
    """``[runs, updates]`` episode returns from metrics.csv rows."""
    out = np.full((len(ids), UPDATES), np.nan)
    for row in rows:
        out[ids.index(row[column]), int(row["update"]) - 1] = float(row["episode_return"] or "nan")
    return out


def test_pbt_search_writes_trains_outputs_plus_search_csv_and_pbt_png(searches):
    work, (proc, _) = searches
    run = work / "PBT"
    assert listing(run) == ["config.json", "metrics.csv", "pbt.png", "returns.png", "search.csv",
                            "summary.json"]
    assert (run / "pbt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "pbt" and summary["population"] == 4
    assert summary["intervals"] == 4 and summary["total_env_steps"] == 4 * UPDATES * 256
    rows = read_csv(run / "metrics.csv")
    assert len(rows) == 4 * UPDATES and list(rows[0])[:3] == ["update", "member", "env_steps"]
    returns = final_return(member_returns(rows, "member", ["0", "1", "2", "3"]))
    best = summary["best"]
    assert best["member"] == int(np.nanargmax(returns))
    assert best["final_return"] == pytest.approx(returns[best["member"]], rel=1e-6)
    # search.csv: every member in every interval; the lineage is consistent with the scores.
    search = read_csv(run / "search.csv")
    assert len(search) == 4 * 4
    assert list(search[0]) == ["interval", "start_update", "member", "lr", "policy_loss", "score",
                               "parent"]
    for k in range(3):
        interval = [r for r in search if r["interval"] == str(k)]
        scores = np.asarray([float(r["score"]) for r in interval])
        parents = [int(r["parent"]) for r in interval]
        replaced = [i for i, p in enumerate(parents) if p != i]
        assert replaced == [int(np.argmin(scores))]  # fraction 0.25 of 4: one member
        assert parents[replaced[0]] == int(np.argmax(scores))
    assert all(r["parent"] == "" for r in search if r["interval"] == "3")
    # The best member's schedule follows its lineage back through the copies.
    schedule = best["schedule"]
    assert [s["start_update"] for s in schedule] == [0, 2, 4, 6]
    assert schedule[-1]["member"] == best["member"]
    for k in range(3):
        parent = next(int(r["parent"]) for r in search if r["interval"] == str(k)
                      and r["member"] == str(schedule[k + 1]["member"]))
        assert parent == schedule[k]["member"]
    assert "pbt, ready every 2 updates, 3 exploits" in proc.stdout


def test_random_search_ranks_samples_and_writes_a_best_config(searches, cli_env):
    work, (_, proc) = searches
    run = work / "RANDOM"
    assert listing(run) == ["best_config.json", "config.json", "metrics.csv", "returns.png",
                            "search.csv", "summary.json"]
    rows = read_csv(run / "metrics.csv")
    assert len(rows) == 3 * 2 * UPDATES and list(rows[0])[:4] == ["update", "sample", "seed",
                                                                   "env_steps"]
    assert {r["seed"] for r in rows} == {"3", "4"}  # --seed 3, 2 seeds
    ids = [f"{s}/{seed}" for s in range(3) for seed in (3, 4)]
    for r in rows:
        r["run"] = f"{r['sample']}/{r['seed']}"
    means = np.nanmean(final_return(member_returns(rows, "run", ids)).reshape(3, 2), axis=1)
    search = read_csv(run / "search.csv")
    assert [int(r["sample"]) for r in search] == list(np.argsort(-means, kind="stable"))
    np.testing.assert_allclose([float(r["final_return"]) for r in search], np.sort(means)[::-1],
                               rtol=1e-6)
    for r in search:
        assert 1e-4 <= float(r["lr"]) <= 1e-2 and 0.0 <= float(r["ent_coef"]) <= 0.05
    best = json.loads((run / "best_config.json").read_text())
    assert np.float32(best["lr"]) == np.float32(search[0]["lr"])  # 9 digits: float32 exact
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"]["sample"] == int(search[0]["sample"])
    assert summary["seeds_per_sample"] == 2
    assert "random" in proc.stdout and "sample" in proc.stdout


@pytest.mark.parametrize("args,expected", [
    (["--method", "pbt", "--space", "bad.json"], "searchable"),
    (["--method", "pbt", "--space", "space.json", "--ready-every", "9"], "--ready-every 9"),
    (["--method", "pbt", "--space", "space.json", "--num-seeds", "2"], "--num-seeds 2"),
    (["--method", "random", "--space", "space.json", "--fraction", "0.5"], "--fraction only"),
    (["--method", "random", "--space", "space.json", "--population", "0"], "--population 0"),
    (["--method", "grid", "--space", "space.json"], "invalid choice: 'grid'"),
    (["--method", "pbt", "--space", "space.json", "--update-rule", "trpo"], "policy_loss"),
    (["--method", "pbt", "--space", "list.yaml"], "must hold a mapping"),
    (["--method", "random", "--space", "huge.json"], "choice 1000"),
    (["--method", "random", "--space", "losslist.json"],
     "space['policy_loss'] choice ['ppo_clip'] must be a policy loss name"),
    (["--method", "random", "--space", "binary.json"],
     "space file 'binary.json' (given to --space) is not UTF-8 text"),
    (["--method", "pbt", "--space", "space.json", "--population", "100000000"],
     "lower --population, --num-envs"),
])
def test_bad_search_input_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, args,
                                                         expected):
    """In this process (a subprocess each costs seconds of imports; one is below)."""
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    (tmp_path / "bad.json").write_text(json.dumps({"num_envs": ["choice", [4, 8]]}))
    (tmp_path / "list.yaml").write_text("- lr\n")
    (tmp_path / "huge.json").write_text('{"lr": ["choice", [1' + "0" * 400 + ']]}')
    (tmp_path / "losslist.json").write_text('{"policy_loss": ["choice", [["ppo_clip"]]]}')
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe{}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "")  # leave this process's jax config alone
    code = cli.main(["search", *args, *TINY_FLAGS, "--out", "OUT"])
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err, expected)
    assert listing(tmp_path) == ["bad.json", "binary.json", "huge.json", "list.yaml",
                                 "losslist.json", "space.json"]


def test_search_into_an_existing_directory_names_fixes_search_has(tmp_path, capsys, monkeypatch):
    """``search`` has no ``--resume``: its message for an existing --out does not offer it."""
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    (tmp_path / "OUT").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "")
    code = cli.main(["search", "--method", "random", "--space", "space.json", *TINY_FLAGS,
                     "--out", "OUT"])
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err,
                          "'OUT' already exists; pass --overwrite to replace it or choose another")
    assert "--resume" not in captured.err
    assert listing(tmp_path) == ["OUT", "space.json"]


def test_a_yaml_space_reads_exponents_as_numbers(tmp_path):
    """YAML 1.1 reads ``1e-5`` as a string; the space file takes it as the number it is."""
    from purejaxppo.app.search import read_space
    from purejaxppo.search import check_space

    (tmp_path / "space.yaml").write_text("lr: [log_uniform, 1e-5, 1e-2]\n"
                                         "ent_coef: [choice, [0, 1e-3]]\n"
                                         "policy_loss: [choice, [ppo_clip, kl_penalty]]\n")
    space = read_space(tmp_path / "space.yaml")
    assert space == {"lr": ["log_uniform", 1e-5, 1e-2], "ent_coef": ["choice", [0, 1e-3]],
                     "policy_loss": ["choice", ["ppo_clip", "kl_penalty"]]}
    checked = check_space(PPOConfig(), space)
    assert (checked["lr"].low, checked["lr"].high) == (1e-5, 1e-2)


def test_missing_space_file_in_a_real_subprocess(tmp_path, cli_env):
    proc = run_cli(["search", "--method", "pbt", "--space", "missing.json", "--out", "OUT"],
                   tmp_path, cli_env)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr,
                          "space file 'missing.json' does not exist; check the path given to "
                          "--space")
    assert listing(tmp_path) == []


def test_a_warning_while_searching_is_one_line_of_the_command(tmp_path, cli_env):
    """A population of 1 on 2 devices runs on one (a library warning, raised while the search
    runs): the command shows it as ``purejaxppo: warning: ...``, not Python's two-line form. A
    budget that is not whole rollouts warns while the input is checked and again while running:
    shown once."""
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    proc = run_cli(["search", "--method", "pbt", "--space", "space.json", "--population", "1",
                    "--local-devices", "2", *TINY_FLAGS, "--total-timesteps", "2100",
                    "--out", "OUT"], tmp_path, cli_env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ["purejaxppo: warning: total_timesteps=2100 is not a multiple of num_envs * "
                     "num_steps = 256: training runs 8 updates = 2048 steps",
                     "purejaxppo: warning: 1 run (grid points x seeds) cannot be split evenly over "
                     "2 devices: running on one device. Use a multiple of 2 runs to use all."], lines
    assert "1 member x" in proc.stdout


def test_ctrl_c_while_searching_ends_with_one_line_and_no_directory(tmp_path, cli_env):
    """Ctrl-C while the search's program runs (it cannot be cancelled on its threads): one line,
    exit 130, no directory, and no abort while the process ends."""
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    proc = subprocess.Popen([sys.executable, "-m", "purejaxppo", "search", "--method", "random",
                             "--space", "space.json", "--population", "4",
                             "--total-timesteps", "4096000", "--out", "OUT"],
                            cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().startswith("Searching (random search)")
        time.sleep(4)  # compiling, then running
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["purejaxppo: interrupted; nothing new was saved"], err
    assert listing(tmp_path) == ["space.json"]

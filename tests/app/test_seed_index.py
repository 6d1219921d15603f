"""``purejaxppo train --seed-index I`` trains seed I of a multi-seed run bit for bit, at a budget
where a lone run of the same key has visibly diverged from it (real subprocesses)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import Background, cli_environment, read_csv

STEPS = ["--total-timesteps", "153600", "--no-progress"]  # 300 updates of CartPole-v1's 512
MULTI = ["--seed", "3", "--num-seeds", "4"]  # 2 seeds per device on 2 cores, 4 on one


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    env = cli_environment()
    work = tmp_path_factory.mktemp("seed-index")
    args = {"multi": [*MULTI, *STEPS, "--out", "multi"],
            "index": [*MULTI, "--seed-index", "2", *STEPS, "--out", "index"],
            "alone": ["--seed", "5", *STEPS, "--out", "alone"]}
    return train_all(args, work, env, seed="5")


def train_all(args: dict[str, list[str]], work, env: dict[str, str], seed: str
              ) -> dict[str, dict]:
    """Runs ``purejaxppo train`` with each of ``args`` at once (subprocesses in ``work``); per
    run, the metrics rows of ``seed``, its config.json and its stdout."""
    procs = {}
    for name, a in args.items():
        (work / f"logs-{name}").mkdir()
        procs[name] = Background(a, work, env, work / f"logs-{name}")
    out = {}
    for name, proc in procs.items():
        result = proc.result()
        assert result.returncode == 0, result.stderr
        rows = read_csv(work / name / "metrics.csv")
        out[name] = {"rows": [r for r in rows if r["seed"] == seed],
                     "config": json.loads((work / name / "config.json").read_text()),
                     "stdout": result.stdout}
    return out


def columns(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0] if k != "seed"}


def test_seed_index_equals_its_seed_of_the_multi_seed_run(runs):
    multi, index = columns(runs["multi"]["rows"]), columns(runs["index"]["rows"])
    assert len(index["update"]) == 300
    for name in multi:
        np.testing.assert_array_equal(index[name], multi[name], err_msg=name)
    config = runs["index"]["config"]
    assert (config["seed"], config["num_seeds"], config["batched_as"]) == (5, 1, 2)
    assert "1 seed" in runs["index"]["stdout"]


def test_a_lone_run_of_the_same_key_has_diverged(runs):
    """Without --seed-index the same key takes other roundings, which learning amplifies: so
    the budget above is long enough for the equality to mean something."""
    multi, alone = columns(runs["multi"]["rows"]), columns(runs["alone"]["rows"])
    assert runs["alone"]["config"]["batched_as"] == 1
    assert not np.array_equal(alone["value_loss"], multi["value_loss"])
    assert np.abs(alone["episode_return"] - multi["episode_return"]).max() > 1.0


def train_wide(tmp_path_factory, name: str, devices: str, indices: tuple[int, ...]
               ) -> dict[str, dict]:
    """18 seeds in 50 updates on ``devices`` CPU devices, and seeds ``indices`` of them alone
    (all at once); per index ``i``, ``multi{i}`` (its rows in the 18-seed run) and ``index{i}``."""
    env = cli_environment()
    work = tmp_path_factory.mktemp(name)
    many = ["--seed", "0", "--num-seeds", "18", "--local-devices", devices,
            "--total-timesteps", "25600", "--no-progress"]  # 50 updates
    args = {"multi": [*many, "--out", "multi"]}
    args |= {f"index{i}": [*many, "--seed-index", str(i), "--out", f"index{i}"] for i in indices}
    runs = train_all(args, work, env, seed="0")
    rows = read_csv(work / "multi" / "metrics.csv")
    for i in indices:
        runs[f"multi{i}"] = {"rows": [r for r in rows if r["seed"] == str(i)]}
        runs[f"index{i}"]["rows"] = read_csv(work / f"index{i}" / "metrics.csv")
    return runs


def assert_same_seed(multi: dict, index: dict) -> None:
    multi, index = columns(multi["rows"]), columns(index["rows"])
    assert len(index["update"]) == 50
    for name in multi:
        np.testing.assert_array_equal(index[name], multi[name], err_msg=name)


def test_seed_index_equals_its_seed_in_groups_of_a_one_core_device(tmp_path_factory):
    """9 seeds per one-core device are run as a group of 7 and a group of 2
    (``parallel.group_size``): a seed of either is trained beside its group's width of copies."""
    runs = train_wide(tmp_path_factory, "seed-index-groups", "2", (3, 17))
    for i, width in ((3, 7), (17, 2)):
        assert_same_seed(runs[f"multi{i}"], runs[f"index{i}"])
        config = runs[f"index{i}"]["config"]
        assert (config["seed"], config["num_seeds"], config["batched_as"]) == (i, 1, width)


def test_seed_index_equals_its_seed_beside_many_seeds_per_device(tmp_path_factory):
    """18 seeds on one device, one batch: XLA:CPU rounds a batch of 16 or more seeds unlike a
    batch of two, so the seed is trained beside as many copies as its device held
    (``batched_as`` 18)."""
    runs = train_wide(tmp_path_factory, "seed-index-wide", "1", (5,))
    assert_same_seed(runs["multi5"], runs["index5"])
    config = runs["index5"]["config"]
    assert (config["seed"], config["num_seeds"], config["batched_as"]) == (5, 1, 18)

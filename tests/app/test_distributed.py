"""The command line over two processes (127.0.0.1, 2 CPU devices each, JAX's distributed runtime):
outputs equal a one-process run of the same seeds, process 0 alone writes, the cluster's
environment works like the flags, and faults end every process with one line, in bounded time.

Every process is a real ``python -m purejaxppo`` subprocess, bounded by a timeout and killed when
the test ends (``tests/processes.py``).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import sys
import time

import jax
import numpy as np
import pytest
from cli_helpers import cli_environment, read_csv
from conftest import TINY_FLAGS
from processes import Group, free_port

from purejaxppo.app import checkpoint, evaluate

TIMEOUT_S = 240
TRAIN = [*TINY_FLAGS, "--num-seeds", "4", "--checkpoint-every", "4", "--out", "run"]
"""4 seeds of the tiny config, checkpointed after 4 of 8 updates."""
PURE = [sys.executable, "-m", "purejaxppo"]


def pair_flags(port: int, process_id: int) -> list[str]:
    return ["--local-devices", "2", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
            "--process-id", str(process_id)]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return cli_environment()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, env):
    """Two processes (cwd ``p0`` and ``p1``, both ``--out run``) and, at the same time, one
    process with 4 devices (cwd ``one``) train the same 4 seeds."""
    work = tmp_path_factory.mktemp("distributed")
    for name in ("p0", "p1", "one"):
        (work / name).mkdir()
    port = free_port()
    commands = [[*PURE, "train", *TRAIN, *pair_flags(port, 0)],
                [*PURE, "train", *TRAIN, *pair_flags(port, 1)],
                [*PURE, "train", *TRAIN, "--local-devices", "4"]]
    cwds = [work / "p0", work / "p1", work / "one"]
    results = []
    with Group(commands, [env] * 3, work / "logs", cwd=cwds) as group:
        results = group.wait(TIMEOUT_S)
    return work, results


def test_two_processes_train_like_one_and_process_0_alone_writes(trained):
    work, (p0, p1, one) = trained
    for r in (p0, p1, one):
        assert r.code == 0, r
    assert "Training PPO" in p0.out and "in 2 processes" in p0.out, p0
    assert "Training" not in p1.out and not (work / "p1" / "run").exists(), p1
    # The others print nothing at all; gloo's line per connection is left out (before: 4 lines
    # "[Gloo] Rank 1 is connected to 1 peer ranks..." on each process's stdout).
    assert p1.out.strip() == "" and "[Gloo]" not in p0.out, (p0, p1)
    two, single = work / "p0" / "run", work / "one" / "run"
    a, b = (json.loads((d / "summary.json").read_text()) for d in (two, single))
    assert a["seeds"] == b["seeds"] == [0, 1, 2, 3]
    np.testing.assert_allclose(a["final_return"]["per_seed"], b["final_return"]["per_seed"],
                               rtol=1e-5)
    rows_a, rows_b = read_csv(two / "metrics.csv"), read_csv(single / "metrics.csv")
    assert [(r["update"], r["seed"]) for r in rows_a] == [(r["update"], r["seed"]) for r in rows_b]
    np.testing.assert_allclose([float(r["value_loss"]) for r in rows_a],
                               [float(r["value_loss"]) for r in rows_b], rtol=1e-4, atol=1e-6)
    # The checkpoint holds every seed (2 of them computed by the other process).
    names = sorted(p.name for p in (two / "checkpoints").glob("ckpt-*"))
    assert names == [checkpoint.checkpoint_name(4), checkpoint.checkpoint_name(8)]
    la, lb = evaluate.load(two, seed=None), evaluate.load(single, seed=None)
    leaves_a = jax.tree.leaves(la.params)
    leaves_b = jax.tree.leaves(lb.params)
    assert leaves_a[0].shape[0] == 4
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # Seeds differ from each other, so a seed copied onto another would be caught.
    assert not np.allclose(leaves_a[0][2], leaves_a[0][3])


def slurm(port: int, process_id: int) -> dict[str, str]:
    """What Slurm sets for task ``process_id`` of 2 on this one node (jax reads it)."""
    return {"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "127.0.0.1", "SLURM_NTASKS": "2",
            "SLURM_PROCID": str(process_id), "SLURM_LOCALID": str(process_id),
            "JAX_COORDINATOR_PORT": str(port)}


def test_eval_from_the_cluster_environment_and_resume_on_another_layout(trained, env):
    """Eval by two processes that read their layout from Slurm's variables equals a one-process
    eval; a checkpoint of 2 processes x 2 devices resumes in 1 process x 4 devices (re-sharded)
    and ends where the one-process run ended."""
    work, results = trained
    assert all(r.code == 0 for r in results), results
    run = work / "p0" / "run"
    resumed = work / "resumed"
    shutil.copytree(run, resumed)
    (resumed / "checkpoints" / "latest").write_text(checkpoint.checkpoint_name(4) + "\n")
    port = free_port()
    evaluation = ["eval", str(run), "--episodes", "3", "--local-devices", "2", "--cluster"]
    commands = [[*PURE, *evaluation], [*PURE, *evaluation],
                [*PURE, "eval", str(run), "--episodes", "3", "--local-devices", "4"],
                [*PURE, "train", "--resume", str(resumed), "--local-devices", "4"]]
    envs = [{**env, **slurm(port, 0)}, {**env, **slurm(port, 1)}, env, env]
    with Group(commands, envs, work / "logs-eval", cwd=work) as group:
        e0, e1, single, resume = group.wait(TIMEOUT_S)
    for r in (e0, e1, single, resume):
        assert r.code == 0, r
    assert "per seed" not in e1.out and "return" not in e1.out, e1  # process 0 alone prints
    per_seed = re.search(r"per seed: (.*)", e0.out).group(1)
    assert per_seed == re.search(r"per seed: (.*)", single.out).group(1)
    assert len(per_seed.split(", ")) == 4
    assert "Resuming from checkpoints/ckpt-00000004.msgpack (update 4 of 8)" in resume.out, resume
    a = evaluate.load(resumed, seed=None)
    b = evaluate.load(work / "one" / "run", seed=None)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def one_line(result, expected: str) -> None:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("purejaxppo: error: "), result
    assert expected in lines[0], result
    assert "Traceback" not in result.err


def test_a_process_that_never_joins_and_a_port_in_use_end_with_one_line(tmp_path, env):
    port = free_port()
    start = time.monotonic()
    never = [*PURE, "train", *TRAIN, *pair_flags(port, 1), "--join-timeout", "5"]
    with Group([never], [env], tmp_path / "never", cwd=tmp_path) as group:
        (alone,) = group.wait(120)
    assert alone.code == 1 and time.monotonic() - start < 90, alone
    one_line(alone, "process 1: process 0 did not join the coordinator "
                    f"127.0.0.1:{port} within 5 s")
    assert not (tmp_path / "run").exists()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        command = [*PURE, "train", *TRAIN, *pair_flags(busy, 0)]
        with Group([command], [env], tmp_path / "busy", cwd=tmp_path) as group:
            (result,) = group.wait(120)
    assert result.code == 2, result
    one_line(result, f"port {busy} of --coordinator is already in use on this machine")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("killed", [1, 0])
def test_a_process_that_dies_stops_the_other_with_one_line(tmp_path, env, killed):
    port = free_port()
    flags = [*TRAIN, "--heartbeat-timeout", "5"]
    commands = [[*PURE, "train", *flags, *pair_flags(port, i)] for i in (0, 1)]
    with Group(commands, [env] * 2, tmp_path / "logs", cwd=tmp_path) as group:
        # Process 0 prints this after both processes joined and checked their input.
        assert group.wait_for_output(0, "Training PPO", 120), group.stdout(0)
        group.kill_process(killed)
        start = time.monotonic()
        results = group.wait(60, settle_s=3)
    other = results[1 - killed]
    # Process 1 dead: process 0's watchdog ends it (exit 1). Process 0, which hosts the
    # coordinator, dead: JAX aborts process 1 (SIGABRT) and its stderr filter says why, unless
    # process 1's own watchdog sees the loss first (exit 1; seen on a loaded machine).
    codes = (1,) if killed == 1 else (-6, 1)
    assert other.code in codes and time.monotonic() - start < 40, other
    expected = ("process 0: process 1 gave no sign of life for 5 s" if killed == 1
                else "process 1: lost the coordinator (process 0)")
    one_line(other, expected)


def test_a_process_killed_while_training_stops_the_other_with_one_line(tmp_path, env):
    """Killed between two gathers of the seeds (a checkpoint every 2 updates): process 0's next
    collective fails at once. Before: a JaxRuntimeError line about gloo's pair.cc, followed at
    times by the watchdog's line as a second one."""
    port = free_port()
    assert TINY_FLAGS[0] == "--total-timesteps"
    flags = ["--total-timesteps", str(7812 * 256), *TINY_FLAGS[2:], "--num-seeds", "4",
             "--checkpoint-every", "2", "--heartbeat-timeout", "5", "--out", "run"]
    commands = [[*PURE, "train", *flags, *pair_flags(port, i)] for i in (0, 1)]
    with Group(commands, [env] * 2, tmp_path / "logs", cwd=tmp_path) as group:
        deadline = time.monotonic() + 180
        while not any((tmp_path / "run" / "checkpoints").glob("ckpt-*")):
            assert time.monotonic() < deadline, group.stdout(0)
            time.sleep(0.2)
        time.sleep(1.0)  # well inside the run: a checkpoint every 2 of 7812 updates
        group.kill_process(1)
        start = time.monotonic()
        results = group.wait(60, settle_s=3)
    assert results[0].code == 1 and time.monotonic() - start < 40, results[0]
    lines = [line for line in results[0].err.splitlines() if line.strip()]
    assert len(lines) == 1, results[0]
    assert ("process 0: another process closed its connection during a collective (it died or "
            "was killed; Gloo" in lines[0]
            or "process 0: process 1 gave no sign of life for 5 s" in lines[0]), results[0]
    assert "JaxRuntimeError" not in results[0].err and "Traceback" not in results[0].err


def test_bad_input_under_several_processes_ends_each_with_one_line(tmp_path, env):
    """Seeds that do not split over every process's devices: each process says so and leaves
    (exit 2) without waiting for JAX's exit barrier."""
    port = free_port()
    flags = [*TINY_FLAGS, "--num-seeds", "3", "--out", "run"]
    commands = [[*PURE, "train", *flags, *pair_flags(port, i)] for i in (0, 1)]
    start = time.monotonic()
    with Group(commands, [env] * 2, tmp_path / "logs", cwd=tmp_path) as group:
        results = group.wait(120, settle_s=2)
    assert time.monotonic() - start < 100
    expected = ("3 runs cannot be split evenly over the 4 devices of 2 processes; use a multiple "
                "of 4")
    assert results[0].code == 2, results[0]
    one_line(results[0], expected)
    # Process 0 waits a moment before taking the coordinator away, so process 1 normally reports
    # the same problem; on a very slow machine it may instead learn that the coordinator left.
    if "lost the coordinator" in results[1].err:
        one_line(results[1], "process 1: lost the coordinator (process 0)")
    else:
        assert results[1].code == 2, results[1]
        one_line(results[1], expected)
    assert not (tmp_path / "run").exists()


SEARCH = ["search", "--method", "pbt", "--population", "4", "--ready-every", "2",
          "--space", "space.json", *TINY_FLAGS, "--out", "search"]
SPACE = '{"lr": ["log_uniform", 1e-4, 1e-2], "ent_coef": ["uniform", 0.0, 0.05]}'


def test_search_and_resume_on_the_same_layout_over_two_processes(trained, env):
    """A PBT search by two processes equals the one-process search (the members, their scores
    and lineage); a two-process run resumed by two processes from its first checkpoint ends bit
    for bit where the uninterrupted two-process run ended."""
    work, results = trained
    assert all(r.code == 0 for r in results), results
    resumed = work / "same-layout"
    shutil.copytree(work / "p0" / "run", resumed)
    (resumed / "checkpoints" / "latest").write_text(checkpoint.checkpoint_name(4) + "\n")
    cwds = [work / name for name in ("s0", "s1", "s-one")]
    for cwd in cwds:
        cwd.mkdir()
        (cwd / "space.json").write_text(SPACE)
    search_port, resume_port = free_port(), free_port()
    commands = [[*PURE, *SEARCH, *pair_flags(search_port, 0)],
                [*PURE, *SEARCH, *pair_flags(search_port, 1)],
                [*PURE, *SEARCH, "--local-devices", "4"],
                [*PURE, "train", "--resume", str(resumed), *pair_flags(resume_port, 0)],
                [*PURE, "train", "--resume", str(resumed), *pair_flags(resume_port, 1)]]
    with Group(commands, [env] * 5, work / "logs-search", cwd=[*cwds, work, work]) as group:
        s0, s1, single, r0, r1 = group.wait(TIMEOUT_S)
    for r in (s0, s1, single, r0, r1):
        assert r.code == 0, r
    assert not (cwds[1] / "search").exists() and "best" not in s1.out, s1
    two, one = read_csv(cwds[0] / "search" / "search.csv"), read_csv(cwds[2] / "search" /
                                                                        "search.csv")
    assert len(two) == len(one) == 4 * 4
    for a, b in zip(two, one, strict=True):
        assert (a["interval"], a["member"], a["parent"]) == (b["interval"], b["member"],
                                                             b["parent"])
        for name in ("lr", "ent_coef", "score"):
            np.testing.assert_allclose(float(a[name]), float(b[name]), rtol=1e-5, err_msg=name)
    best_two, best_one = (json.loads((c / "search" / "summary.json").read_text())["best"]
                          for c in (cwds[0], cwds[2]))
    assert best_two["member"] == best_one["member"]

    assert "Resuming from checkpoints/ckpt-00000004.msgpack (update 4 of 8)" in r0.out, r0
    assert "Resuming" not in r1.out, r1
    a = evaluate.load(resumed, seed=None)
    b = evaluate.load(work / "p0" / "run", seed=None)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(x, y)
    assert (resumed / "metrics.csv").read_text() == (work / "p0" / "run" / "metrics.csv").read_text()

"""The command line on an environment suite: a masked Jumanji env trained, resumed, evaluated and
loaded; a missing extra, an unknown suite and --gif on a suite env that cannot draw are one-line
errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, cli_environment, run_cli
from conftest import require_suite

import purejaxppo
from purejaxppo import envs

require_suite("jumanji", "jumanji")

ENV = "jumanji:Game2048-v1"
FLAGS = ["--env", ENV, "--total-timesteps", "128", "--num-envs", "2", "--num-steps", "16",
         "--update-epochs", "1", "--num-minibatches", "1", "--hidden-sizes", "16",
         "--num-seeds", "2", "--checkpoint-every", "2", "--no-progress"]
"""4 updates of 2 envs x 16 steps, 2 seeds, a checkpoint every 2 updates."""


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli-suites")


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> dict[str, str]:
    return cli_environment()


@pytest.fixture(scope="module")
def run(work, cli_env) -> Path:
    proc = run_cli(["train", *FLAGS, "--out", "J"], work, cli_env)
    assert proc.returncode == 0, proc.stderr
    return work / "J"


@pytest.fixture(scope="module")
def evaluated(run, work, cli_env) -> subprocess.CompletedProcess:
    """``eval`` of the run: 2 episodes of each seed, and a GIF of one episode of seed 0."""
    return run_cli(["eval", "J", "--episodes", "2", "--max-steps", "6", "--gif", "j.gif"], work,
                   cli_env)


def test_suite_env_trains_resumes_bit_for_bit_and_evaluates(run, work, cli_env, evaluated):
    # Resume from the update-2 checkpoint of a copy: the same final checkpoint as the full run.
    copy = work / "J2"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / "ckpt-00000004.msgpack").unlink()
    (copy / "checkpoints" / "latest").write_text("ckpt-00000002.msgpack\n")
    resumed = run_cli(["train", "--resume", "J2", "--no-progress"], work, cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert "update 2 of 4" in resumed.stdout
    final = "checkpoints/ckpt-00000004.msgpack"
    assert (copy / final).read_bytes() == (run / final).read_bytes()

    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.startswith(f"{ENV}: checkpoint at update 4 of 4")


def test_load_and_policy_of_a_suite_run_respect_the_mask(run):
    loaded = purejaxppo.load(run)  # seed 0's parameters
    assert loaded.config.env == ENV and loaded.update == 4
    act = purejaxppo.policy(loaded.config)
    env = envs.make(ENV)
    params = loaded.params
    obs, state = jax.vmap(env.adapter.reset)(jax.random.split(jax.random.key(0), 32))
    mask = np.asarray(state.action_mask)
    assert not mask.all()
    actions = np.asarray(act(params, obs, jax.random.key(1), action_mask=state.action_mask))
    assert mask[np.arange(32), actions].all()


def test_gif_of_a_suite_env(evaluated, work):
    """Jumanji draws its episode with its own viewer (an env that cannot draw: test_cli.py)."""
    from PIL import Image

    assert evaluated.returncode == 0, evaluated.stderr
    assert "wrote j.gif: one episode of seed 0's policy" in evaluated.stdout
    with Image.open(work / "j.gif") as gif:
        assert 1 <= gif.n_frames <= 6 and min(gif.size) >= 100


def test_missing_extra_and_unknown_suite_are_one_line_errors(work, cli_env):
    hide = ("import sys; sys.modules['navix'] = None; sys.argv[0] = 'purejaxppo'; "
            "from purejaxppo.app.cli import main; sys.exit(main())")
    proc = subprocess.run([sys.executable, "-c", hide, "train", "--env", "navix:Navix-Empty-5x5-v0",
                           "--out", "N"], cwd=work, env=cli_env, capture_output=True, text=True,
                          timeout=600)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr,
                          "pip install 'purejaxppo[navix]'")
    proc = run_cli(["train", "--env", "brx:ant", "--out", "B"], work, cli_env)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr,
                          "unknown environment suite 'brx:'. Did you mean 'brax:'")
    assert not (work / "N").exists() and not (work / "B").exists()

"""The command line beyond the built-in MLP on gymnax: an environment registered by the user's
own module (``--imports``), the convolutional network (``--network cnn``) and TRPO.

Real subprocesses and real (tiny) training, as in test_cli.py, sharing its compilation cache.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cli_helpers import (
    Background,
    assert_one_line_error,
    cli_environment,
    listing,
    read_csv,
    run_cli,
)
from conftest import TINY_FLAGS

import purejaxppo
from purejaxppo import envs
from purejaxppo.app import cli
from purejaxppo.config import PPOConfig
from purejaxppo.train import metric_names

UPDATES = 8

CORRIDOR_MODULE = '''
"""Corridor-v0: cells 0..4, starting in cell 0. Action 1 moves right, 0 left; reaching cell 4
ends the episode with +1, every other step costs 0.1. A 12-step time limit (register's)."""

import jax
import jax.numpy as jnp

from purejaxppo import envs

CELLS = 5


class Corridor:
    observation_space = envs.Box.of((CELLS,), 0.0, 1.0)  # the cell, one-hot
    action_space = envs.Discrete(2)
    max_episode_steps = None

    def reset(self, key):
        cell = jnp.zeros((), jnp.int32)
        return jax.nn.one_hot(cell, CELLS), cell

    def transition(self, key, cell, action):
        cell = jnp.clip(cell + 2 * action - 1, 0, CELLS - 1)
        end = cell == CELLS - 1
        reward = jnp.where(end, 1.0, -0.1)
        return jax.nn.one_hot(cell, CELLS), cell, reward, end, jnp.zeros((), bool)


envs.register("Corridor-v0", Corridor, max_episode_steps=12)
'''
LOWEST, HIGHEST = -1.2, 0.7
"""Corridor-v0's returns: 12 steps without reaching the end, or the end in 4 steps."""
SHORTEST, LONGEST = 4, 12


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    env = cli_environment()
    # Python (3.11+) leaves the current directory off sys.path, as for the installed
    # `purejaxppo` script, so only --imports' own search of it can find the module.
    env["PYTHONSAFEPATH"] = "1"
    return env


@pytest.fixture(scope="module")
def cnn_started(tmp_path_factory, cli_env):
    """PPO with --network cnn on Breakout-MinAtar, started first: it compiles while the
    Corridor-v0 run does."""
    work = tmp_path_factory.mktemp("cnn")
    run = Background(["train", "--env", "Breakout-MinAtar", "--network", "cnn", *TINY_FLAGS,
                      "--hidden-sizes", "32", "--out", "CNN"], work, cli_env,
                     tmp_path_factory.mktemp("cnn-logs"))
    yield work / "CNN", run
    run.stop()


@pytest.fixture(scope="module")
def corridor(tmp_path_factory, cli_env, cnn_started):
    """The user's folder: corridor_module.py, and a TRPO run on Corridor-v0 (so that this run
    also covers the command line's second update rule) in chunks of 4 updates."""
    folder = tmp_path_factory.mktemp("corridor")
    (folder / "corridor_module.py").write_text(CORRIDOR_MODULE)
    proc = run_cli(["train", "--imports", "corridor_module", "--env", "Corridor-v0",
                    "--update-rule", "trpo", *TINY_FLAGS, "--checkpoint-every", "4",
                    "--out", "run"], folder, cli_env)
    assert proc.returncode == 0, proc.stderr
    return folder, proc


def test_custom_env_trains_through_the_command_line(corridor):
    folder, proc = corridor
    out = folder / "run"
    assert proc.stdout.startswith("Training TRPO on Corridor-v0 (no preset), 1 seed x 8 updates "
                                  "of 256 steps -> run/\n")
    assert proc.stderr == ""
    settings = json.loads((out / "config.json").read_text())
    assert settings["imports"] == ["corridor_module"] and settings["env"] == "Corridor-v0"
    assert settings["preset"] is None and settings["update_rule"] == "trpo"

    rows = read_csv(out / "metrics.csv")
    assert [int(r["update"]) for r in rows] == list(range(1, UPDATES + 1))
    assert int(rows[-1]["env_steps"]) == 2048
    # Episodes of at most 12 steps end in every rollout of 64 steps: the corridor's returns.
    returns = np.array([float(r["episode_return"]) for r in rows])
    lengths = np.array([float(r["episode_length"]) for r in rows])
    assert np.all((returns >= LOWEST - 1e-5) & (returns <= HIGHEST + 1e-5)), returns
    assert np.all((lengths >= SHORTEST) & (lengths <= LONGEST)), lengths

    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == "Corridor-v0" and summary["preset"] is None
    assert summary["final_return"]["mean"] == pytest.approx(returns[-1], abs=1e-6)
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["ckpt-00000004.msgpack", "ckpt-00000008.msgpack", "latest"]


def test_trpo_run_reports_trpo_metrics(corridor):
    folder, _ = corridor
    settings = json.loads((folder / "run" / "config.json").read_text())
    config = PPOConfig(**{k: v for k, v in settings.items() if k in PPOConfig.__dataclass_fields__})
    rows = read_csv(folder / "run" / "metrics.csv")
    assert list(rows[0])[:3] == ["update", "seed", "env_steps"]
    assert set(rows[0]) == {"update", "seed", *metric_names(config)}
    assert {"trpo_kl", "trpo_line_search_steps", "trpo_improvement"} <= set(rows[0])
    assert "clip_fraction" not in rows[0] and "kl_beta" not in rows[0]
    for r in rows:
        assert all(np.isfinite(float(v)) for v in r.values()), r
    # Every accepted step stays in the trust region (max_kl) and improves the surrogate; a
    # rejected one reports line_search_steps and a zero KL.
    kl = np.array([float(r["trpo_kl"]) for r in rows])
    steps = np.array([int(r["trpo_line_search_steps"]) for r in rows])
    assert np.all((kl >= 0) & (kl <= config.max_kl * (1 + 1e-6)))
    assert np.all((steps >= 0) & (steps <= config.line_search_steps))
    assert np.all(np.array([float(r["trpo_improvement"]) for r in rows]) >= 0)
    assert np.any(steps < config.line_search_steps) and np.any(kl > 0)


def test_eval_imports_the_module_named_in_config_json(corridor, cli_env):
    folder, _ = corridor
    proc = run_cli(["eval", "run", "--episodes", "3"], folder, cli_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Corridor-v0: checkpoint at update 8 of 8, stochastic policy, "
                                  "3 episodes x 1 seed\n")
    m = re.search(r"return (-?[\d.]+) ± [\d.]+ +\(min (-?[\d.]+), max (-?[\d.]+), mean length "
                  r"([\d.]+)\)", proc.stdout)
    assert m, proc.stdout
    mean, low, high, length = map(float, m.groups())
    assert LOWEST - 0.01 <= low <= mean <= high <= HIGHEST + 0.01
    assert SHORTEST <= length <= LONGEST
    assert "note:" not in proc.stdout  # the time limit ended every episode
    assert proc.stderr == ""


def test_resume_imports_the_module_too(corridor, cli_env):
    folder, _ = corridor
    shutil.copytree(folder / "run", folder / "resumed")
    resumed = folder / "resumed"
    (resumed / "checkpoints" / "ckpt-00000008.msgpack").unlink()
    (resumed / "checkpoints" / "latest").write_text("ckpt-00000004.msgpack\n")
    for name in ("metrics.csv", "summary.json", "returns.png"):
        (resumed / name).unlink()
    proc = run_cli(["train", "--resume", "resumed"], folder, cli_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Resuming from checkpoints/ckpt-00000004.msgpack (update 4 of "
                                  "8)\nResuming TRPO on Corridor-v0")
    final = "checkpoints/ckpt-00000008.msgpack"
    assert (resumed / final).read_bytes() == (folder / "run" / final).read_bytes()
    assert (resumed / "metrics.csv").read_text() == (folder / "run" / "metrics.csv").read_text()


def test_unknown_module_to_import_is_one_line_and_writes_nothing(corridor, cli_env):
    folder, _ = corridor
    before = listing(folder)
    proc = run_cli(["train", "--imports", "nosuchmodule", "--env", "Corridor-v0", *TINY_FLAGS,
                    "--out", "bad"], folder, cli_env)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr,
                          "cannot import module 'nosuchmodule' (given by --imports): "
                          "ModuleNotFoundError")
    assert listing(folder) == before and not (folder / "bad").exists()


BROKEN_MODULE = """
from gymnax.environments.classic_control.cartpole import CartPole

from purejaxppo import envs


class Broken(CartPole):
    def step_env(self, key, state, action, params):
        raise RuntimeError("Broken-v0's step is not written yet")


envs.register("Broken-v0", Broken)
"""


def test_an_error_in_the_users_environment_is_one_line_and_leaves_no_directory(corridor,
                                                                              cli_env):
    """The error of an --imports module's code, in the real command: one line naming it and
    where it was raised, exit 1, and no run directory (nothing was trained)."""
    folder, _ = corridor
    (folder / "broken_module.py").write_text(BROKEN_MODULE)
    before = listing(folder)
    proc = run_cli(["train", "--imports", "broken_module", "--env", "Broken-v0", *TINY_FLAGS,
                    "--out", "broken"], folder, cli_env)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("purejaxppo: error: RuntimeError: "
                                                   "Broken-v0's step is not written yet"), lines
    assert "broken_module.py:9)" in lines[0] and "Traceback" not in proc.stderr
    assert listing(folder) == before and not (folder / "broken").exists()


def test_without_imports_the_env_is_unknown(corridor, capsys, monkeypatch):
    """In this process, where corridor_module was never imported."""
    folder, _ = corridor
    assert "Corridor-v0" not in envs.registered()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "")  # leave this process's jax config alone
    before = listing(folder)
    code = cli.main(["train", "--env", "Corridor-v0", "--out", "bad"])
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err, "unknown environment 'Corridor-v0'")
    assert "register your own with purejaxppo.envs.register" in captured.err
    assert listing(folder) == before


# --- --network cnn on MinAtar's [10, 10, C] grids.


@pytest.fixture(scope="module")
def cnn_run(cnn_started):
    out, run = cnn_started
    proc = run.result()
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_cnn_network_trains_on_minatar(cnn_run):
    out, proc = cnn_run
    assert proc.stdout.startswith("Training PPO (ppo_clip) on Breakout-MinAtar (preset Breakout-MinAtar)")
    assert proc.stderr == ""
    settings = json.loads((out / "config.json").read_text())
    assert settings["network"] == "cnn" and settings["hidden_sizes"] == [32]
    rows = read_csv(out / "metrics.csv")
    assert len(rows) == UPDATES
    for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "approx_kl_k1",
                 "clip_fraction", "explained_variance", "learning_rate"):
        assert all(np.isfinite(float(r[name])) for r in rows), name
    assert all(int(r["nonfinite"]) == 0 for r in rows)
    assert np.isfinite(float(rows[-1]["episode_return"]))  # Breakout episodes are short
    summary = json.loads((out / "summary.json").read_text())
    assert summary["first_nonfinite_update"] is None and summary["final_return"]["mean"] is not None


def test_cnn_checkpoint_holds_a_convolution_and_acts_on_grids(cnn_run):
    out, _ = cnn_run
    run = purejaxppo.load(out)
    assert run.config.network == "cnn"
    channels = envs.make("Breakout-MinAtar").obs_shape[-1]
    for net in ("actor", "critic"):
        shapes = [x.shape for x in jax.tree.leaves(run.params[net])]
        assert (3, 3, channels, 16) in shapes, (net, shapes)  # Conv(16, 3x3) over the channels
    act = purejaxppo.policy(run.config)
    grids = jnp.zeros((2, 10, 10, channels))
    actions = act(run.params, grids, jax.random.key(0))
    n = envs.make("Breakout-MinAtar").action_size
    assert actions.shape == (2,) and bool(jnp.all((actions >= 0) & (actions < n)))


# --- --network gru: the hidden state in the checkpoint, resume, eval, load() and the policy.


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory, cli_env):
    work = tmp_path_factory.mktemp("gru")
    proc = run_cli(["train", "--network", "gru", *TINY_FLAGS, "--hidden-sizes", "16",
                    "--checkpoint-every", "4", "--no-progress", "--out", "GRU"], work, cli_env)
    assert proc.returncode == 0, proc.stderr
    return work


def test_gru_run_resumes_bit_for_bit_from_its_hidden_state(gru_run, cli_env):
    """Resumed from update 4's checkpoint (which holds every environment's hidden state), the run
    ends in the same checkpoint as the uninterrupted one."""
    settings = json.loads((gru_run / "GRU" / "config.json").read_text())
    assert settings["network"] == "gru"
    shutil.copytree(gru_run / "GRU", gru_run / "RESUMED")
    folder = gru_run / "RESUMED" / "checkpoints"
    (folder / "ckpt-00000008.msgpack").unlink()
    (folder / "latest").write_text("ckpt-00000004.msgpack\n")
    proc = run_cli(["train", "--resume", "RESUMED", "--no-progress"], gru_run, cli_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Resuming from checkpoints/ckpt-00000004.msgpack (update 4 of 8)")
    final = "checkpoints/ckpt-00000008.msgpack"
    assert (gru_run / "RESUMED" / final).read_bytes() == (gru_run / "GRU" / final).read_bytes()


def test_gru_eval_and_load_act_with_the_carry(gru_run, cli_env):
    proc = run_cli(["eval", "GRU", "--episodes", "4", "--deterministic"], gru_run, cli_env)
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"return (-?[\d.]+) ± ([\d.]+)", proc.stdout)
    assert m and 8.0 <= float(m.group(1)) <= 500.0, proc.stdout
    run = purejaxppo.load(gru_run / "GRU")
    assert run.config.network == "gru"
    act = purejaxppo.policy(run.config)
    carry = purejaxppo.initial_carry(run.config, (2,))
    carry, actions = act(run.params, carry, jnp.zeros((2, 4)), jax.random.key(0))
    assert actions.shape == (2,) and jax.tree.leaves(carry)[0].shape == (2, 16)
    assert float(jnp.abs(carry["actor"]).max()) > 0


NOISY_MODULE = """
import warnings

warnings.warn("noisy_module.old_api is deprecated", DeprecationWarning)
warnings.warn("noisy_module: a note for its users", UserWarning)
"""


@pytest.mark.parametrize("python_flags", [[], ["-W", "default"]], ids=["default", "-W default"])
def test_a_librarys_deprecation_notice_is_left_out_unless_asked_for(tmp_path, cli_env,
                                                                    python_flags):
    """A module imported by the command (an environment suite's dependency, here one given by
    --imports) that warns as it is imported: its UserWarning is one line; its
    DeprecationWarning is left out, as Python leaves out deprecations raised outside __main__,
    unless Python's -W asks for them."""
    (tmp_path / "noisy_module.py").write_text(NOISY_MODULE)
    proc = subprocess.run([sys.executable, *python_flags, "-m", "purejaxppo", "train",
                           "--imports", "noisy_module", *TINY_FLAGS, "--no-progress",
                           "--out", "run"], cwd=tmp_path, env=cli_env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    expected = ["purejaxppo: warning: noisy_module: a note for its users"]
    if python_flags:
        expected.insert(0, "purejaxppo: warning: noisy_module.old_api is deprecated")
    assert proc.stderr.strip().splitlines() == expected, proc.stderr

"""The purejaxppo command as a user runs it (a subprocess): outputs, resume, eval, bad input.

Runs are tiny (8 updates of 4 envs x 64 steps, 2 seeds); the subprocesses share a compilation
cache so that a program compiled by one run is reused by the next.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purejaxppo
from purejaxppo import cli, evaluate
from purejaxppo.config import PPOConfig
from purejaxppo.metrics import METRICS
from purejaxppo.networks import init_params
from purejaxppo.normalize import init_stats
from purejaxppo.presets import SettingsError, presets, read_settings_file, resolve
from purejaxppo.train import make_agent

TINY = ["--total-timesteps", "2048", "--num-envs", "4", "--num-steps", "64"]  # 8 updates
UPDATES, SEEDS = 8, (5, 6)


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    env = dict(os.environ)
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("xla-cache"))
    env["JAX_PLATFORMS"] = "cpu"
    return env


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "purejaxppo.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def run_a(work, cli_env) -> tuple[Path, subprocess.CompletedProcess]:
    """2 seeds, checkpointed every 4 updates: two chunks of one compiled program."""
    proc = run_cli(["train", *TINY, "--num-seeds", "2", "--seed", "5", "--checkpoint-every", "4",
                    "--out", "A"], work, cli_env)
    assert proc.returncode == 0, proc.stderr
    return work / "A", proc


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_train_writes_every_output(run_a):
    out, proc = run_a
    config = json.loads((out / "config.json").read_text())
    # Preset values, overridden by the flags; the file is itself a valid --config file.
    assert config["env"] == "CartPole-v1" and config["preset"] == "CartPole-v1"
    assert config["total_timesteps"] == 2048 and config["num_envs"] == 4
    assert config["lr"] == 2.5e-4 and config["num_seeds"] == 2 and config["seed"] == 5
    assert resolve({}, read_settings_file(out / "config.json")).config == PPOConfig(
        **{k: v for k, v in config.items() if k in PPOConfig.__dataclass_fields__})

    rows = read_csv(out / "metrics.csv")
    assert len(rows) == UPDATES * len(SEEDS)
    assert list(rows[0])[:3] == ["update", "seed", "env_steps"]
    assert set(rows[0]) == {"update", "seed", *METRICS}
    assert [(int(r["update"]), int(r["seed"])) for r in rows[:3]] == [(1, 5), (1, 6), (2, 5)]
    assert int(rows[-1]["env_steps"]) == 2048
    assert all(np.isfinite(float(r["policy_loss"])) for r in rows)

    summary = json.loads((out / "summary.json").read_text())
    finals = []
    for seed in SEEDS:
        returns = [float(r["episode_return"]) for r in rows if int(r["seed"]) == seed]
        finals.append(returns[-1])  # 5% of 8 updates: the last one
    assert summary["final_return"]["per_seed"] == pytest.approx(finals)
    assert summary["final_return"]["mean"] == pytest.approx(np.mean(finals))
    assert summary["final_return"]["std"] == pytest.approx(np.std(finals))
    assert summary["num_updates"] == UPDATES and summary["seeds"] == list(SEEDS)
    assert summary["compile_time_s"] > 0 and summary["run_time_s"] > 0
    assert summary["env_steps_per_s"] > 0
    assert {"jax", "flax", "gymnax", "purejaxppo"} <= set(summary["versions"])
    # The CLI makes one CPU device per core (use_cpu_cores) and splits the seeds over them.
    cores = len(os.sched_getaffinity(0))
    split = ", seeds split over 2" if cores >= 2 else ""
    assert summary["device"] == f"cpu ({cores} x cpu{split})"

    assert (out / "returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["ckpt-00000004.msgpack", "ckpt-00000008.msgpack", "latest"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "ckpt-00000008.msgpack"

    assert "final return" in proc.stdout and f"{summary['final_return']['mean']:.2f}" in proc.stdout
    assert "updates [" not in proc.stdout  # no progress bar: stdout is not a terminal
    assert proc.stderr == ""
    assert not [p for p in out.rglob(".*.tmp")]


def test_resume_equals_uninterrupted_bit_for_bit(run_a, work, cli_env):
    out, _ = run_a
    resumed = work / "R"
    shutil.copytree(out, resumed)
    # Pretend the run died after its first checkpoint.
    (resumed / "checkpoints" / "ckpt-00000008.msgpack").unlink()
    (resumed / "checkpoints" / "latest").write_text("ckpt-00000004.msgpack\n")
    for name in ("metrics.csv", "summary.json", "returns.png"):
        (resumed / name).unlink()
    proc = run_cli(["train", "--resume", "R"], work, cli_env)
    assert proc.returncode == 0, proc.stderr
    final = "checkpoints/ckpt-00000008.msgpack"
    assert (resumed / final).read_bytes() == (out / final).read_bytes()
    assert (resumed / "metrics.csv").read_text() == (out / "metrics.csv").read_text()
    assert json.loads((resumed / "summary.json").read_text())["resumed_from_update"] == 4


def test_chunked_run_equals_one_program(run_a, work, cli_env):
    out, _ = run_a
    proc = run_cli(["train", *TINY, "--num-seeds", "2", "--seed", "5", "--out", "C"], work, cli_env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (work / "C" / "checkpoints").iterdir()) == [
        "ckpt-00000008.msgpack", "latest"]
    final = "checkpoints/ckpt-00000008.msgpack"
    assert (work / "C" / final).read_bytes() == (out / final).read_bytes()
    assert (work / "C" / "metrics.csv").read_text() == (out / "metrics.csv").read_text()


def test_eval_prints_mean_return(run_a, work, cli_env):
    proc = run_cli(["eval", "A", "--episodes", "6", "--deterministic"], work, cli_env)
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"return (-?[\d.]+) ± ([\d.]+)", proc.stdout)
    assert m, proc.stdout
    assert 8.0 <= float(m.group(1)) <= 500.0  # CartPole episodes last 8 to 500 steps
    assert "6 episodes x 2 seeds" in proc.stdout and "per seed:" in proc.stdout


def test_load_and_policy(run_a):
    out, _ = run_a
    run = purejaxppo.load(out)
    assert run.config.env == "CartPole-v1" and run.update == UPDATES and run.obs_stats is None
    both = purejaxppo.load(out, seed=None)
    leaf, leaf0 = jax.tree.leaves(both.params)[0], jax.tree.leaves(run.params)[0]
    assert leaf.shape == (2, *leaf0.shape)
    np.testing.assert_array_equal(leaf[0], leaf0)

    act = jax.jit(purejaxppo.policy(run.config), static_argnames="deterministic")
    obs = jnp.array([0.01, -0.02, 0.03, 0.0])
    a = act(run.params, obs, jax.random.key(0))
    assert a.shape == () and int(a) in (0, 1)
    batch = jnp.stack([obs] * 5)
    greedy = act(run.params, batch, deterministic=True)
    assert greedy.shape == (5,) and bool(jnp.all(greedy == greedy[0]))
    with pytest.raises(ValueError, match="needs a key"):
        purejaxppo.policy(run.config)(run.params, obs)
    with pytest.raises(ValueError, match="out of range"):
        purejaxppo.load(out, seed=2)


def fresh_params(config: PPOConfig) -> dict:
    agent = make_agent(config)
    return init_params(jax.random.key(0), agent.actor, agent.critic, agent.spec.obs_size)


def test_policy_of_a_box_env_clips_and_needs_obs_stats():
    config = PPOConfig(env="Pendulum-v1", num_envs=2, num_steps=8, total_timesteps=16,
                       num_minibatches=1, normalize_obs=True, hidden_sizes=(8,))
    params, stats = fresh_params(config), init_stats((3,))
    act = purejaxppo.policy(config)
    obs = 100.0 * jnp.ones((5, 3))
    actions = act(params, obs, jax.random.key(1), obs_stats=stats)
    assert actions.shape == (5, 1) and bool(jnp.all(jnp.abs(actions) <= 2.0))
    assert act(params, obs[0], deterministic=True, obs_stats=stats).shape == (1,)
    with pytest.raises(ValueError, match="obs_stats"):
        act(params, obs, jax.random.key(1))


def test_gif_of_a_minatar_episode(tmp_path):
    config = PPOConfig(env="Breakout-MinAtar", num_envs=2, num_steps=8, total_timesteps=16,
                       num_minibatches=1, hidden_sizes=(8,))
    params = jax.tree.map(lambda x: x[None], fresh_params(config))  # a seed axis, as load gives
    loaded = evaluate.Loaded(config, params, None, 0)
    ret, length = evaluate.render_gif(loaded, tmp_path / "ep.gif", jax.random.key(0),
                                      deterministic=False, max_steps=12)
    assert 1 <= length <= 12
    assert (tmp_path / "ep.gif").read_bytes()[:6] in (b"GIF87a", b"GIF89a")


# --- Bad input: one line on stderr naming the problem and the fix, exit code 2, nothing written.


BAD_INPUTS = {
    "unknown env": (["--env", "CartPol-v1", "--out", "bad"], "Did you mean 'CartPole-v1'"),
    "preset for another env": (["--env", "Acrobot-v1", "--preset", "CartPole-v1", "--out", "bad"],
                               "preset 'CartPole-v1' is for CartPole-v1"),
    "minibatches do not divide": (["--num-minibatches", "3", "--out", "bad"],
                                  "must divide num_envs * num_steps = 512; set --num-minibatches"),
    "zero envs": (["--num-envs", "0", "--out", "bad"], "num_envs=0 is invalid"),
    "negative lr": (["--lr", "-0.1", "--out", "bad"], "lr=-0.1 is invalid: must be > 0"),
    "missing config file": (["--config", "nope.json", "--out", "bad"], "does not exist"),
    "corrupt config file": (["--config", "corrupt.json", "--out", "bad"], "not valid JSON"),
    "existing output": (["--out", "A"], "already exists; pass --overwrite"),
    "resume without checkpoint": (["--resume", "nockpt"], "has no checkpoint"),
    "resume corrupt checkpoint": (["--resume", "K"], "is corrupt"),
}
"""Case -> (arguments, expected part of the message), run as subprocesses beside run A."""

MORE_BAD_INPUTS = {
    "unknown preset": (["--preset", "Cartpole", "--out", "bad"], "did you mean 'CartPole-v1'"),
    "zero seeds": (["--num-seeds", "0", "--out", "bad"], "num_seeds=0 is invalid"),
    "not a number": (["--num-envs", "four", "--out", "bad"], "invalid int value: 'four'"),
    "unknown flag": (["--num-env", "8", "--out", "bad"], "did you mean --num-envs?"),
    "unknown config key": (["--config", "unknown.json", "--out", "bad"],
                           "unknown setting 'learning_rate'"),
    "overwrite a non-run": (["--out", "notrun", "--overwrite"], "not a purejaxppo run directory"),
    "resume with new settings": (["--resume", "A", "--lr", "0.1"], "cannot take --lr"),
    "eval corrupt checkpoint": (["eval", "K"], "is corrupt"),
    "eval missing run": (["eval", "nowhere"], "does not exist"),
    "eval zero episodes": (["eval", "A", "--episodes", "0"], "must be a positive integer"),
    "unknown command": (["evaluate", "A"], "did you mean 'eval'"),
    "gif without renderer": (["eval", "A", "--gif", "a.gif"], "pip install 'purejaxppo[render]'"),
}
"""The same checks, through ``cli.main`` in this process (a subprocess costs ~3 s of imports)."""

HAS_PYGAME = importlib.util.find_spec("pygame") is not None


@pytest.fixture(scope="module")
def bad_setup(run_a, work) -> Path:
    (work / "corrupt.json").write_text('{"lr": 0.001,')
    (work / "unknown.json").write_text('{"learning_rate": 0.001}')
    (work / "notrun").mkdir()
    (work / "notrun" / "keep.txt").write_text("mine")
    (work / "nockpt").mkdir()
    shutil.copy(work / "A" / "config.json", work / "nockpt" / "config.json")
    shutil.copytree(work / "A", work / "K")
    ckpt = work / "K" / "checkpoints" / "ckpt-00000008.msgpack"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated, as by a full disk
    return work


def _listing(work: Path) -> list[str]:
    return sorted(p.relative_to(work).as_posix() for p in work.rglob("*")
                  if "xla" not in p.as_posix())


@pytest.fixture(scope="module")
def bad_runs(bad_setup, cli_env) -> dict[str, subprocess.CompletedProcess]:
    """Every bad input, run four at a time; none may write anything."""
    work = bad_setup
    before = _listing(work)
    with ThreadPoolExecutor(max_workers=4) as pool:
        procs = pool.map(lambda args: run_cli(args, work, cli_env),
                         [a for a, _ in BAD_INPUTS.values()])
        results = dict(zip(BAD_INPUTS, procs, strict=True))
    assert _listing(work) == before
    return results


def assert_one_line_error(code: int, out: str, err: str, expected: str) -> None:
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("purejaxppo: error: ")
    assert expected in lines[0]
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_code_2(bad_runs, case):
    proc = bad_runs[case]
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, BAD_INPUTS[case][1])


@pytest.mark.parametrize("case", list(MORE_BAD_INPUTS))
def test_more_bad_input_in_process(bad_setup, case, capsys, monkeypatch):
    if case.startswith("gif") and HAS_PYGAME:
        pytest.skip("pygame is installed, so --gif can render classic-control envs")
    monkeypatch.chdir(bad_setup)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "")  # leave this process's jax config alone
    before = _listing(bad_setup)
    args, expected = MORE_BAD_INPUTS[case]
    code = cli.main(args)
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err, expected)
    assert _listing(bad_setup) == before


# --- Settings resolution, help and output directory, in process.


def test_precedence_defaults_preset_file_flags():
    assert resolve({}).config == PPOConfig(**{**presets()["CartPole-v1"].config})
    acro = resolve({"env": "Acrobot-v1"})
    assert acro.preset == "Acrobot-v1" and acro.config.num_envs == 16 and acro.config.normalize_obs
    from_file = resolve({"env": "Acrobot-v1"}, {"num_envs": 8, "lr": 1e-3, "num_seeds": 3})
    assert (from_file.config.num_envs, from_file.config.lr) == (8, 1e-3)
    assert from_file.config.num_steps == 256 and from_file.options.num_seeds == 3
    flags = resolve({"env": "Acrobot-v1", "lr": 5e-4}, {"num_envs": 8, "lr": 1e-3})
    assert (flags.config.num_envs, flags.config.lr) == (8, 5e-4)
    # The file's env picks the preset; a flag's env wins over the file's.
    assert resolve({}, {"env": "Pendulum-v1"}).config.gamma == 0.9
    assert resolve({"env": "CartPole-v1"}, {"env": "Pendulum-v1"}).config.env == "CartPole-v1"
    no_preset = resolve({"env": "Catch-bsuite", "total_timesteps": 4096})
    assert no_preset.preset is None and no_preset.config.lr == PPOConfig.lr


def test_every_preset_is_valid_and_runs_whole_batches():
    assert {"CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1",
            "MountainCarContinuous-v0", "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar",
            "SpaceInvaders-MinAtar", "Seaquest-MinAtar"} <= set(presets())
    for name, preset in presets().items():
        config = resolve({"preset": name}).config
        assert config.env == preset.env and preset.source
        assert config.total_timesteps % config.batch_size == 0, name


def test_yaml_settings_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("env: Acrobot-v1\nlr: 0.001\nhidden_sizes: [32, 32]\nnum_seeds: 2\n")
    resolved = resolve({}, read_settings_file(path))
    assert resolved.config.hidden_sizes == (32, 32) and resolved.options.num_seeds == 2
    path.write_text("lr: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        read_settings_file(path)


def test_help_has_a_flag_per_config_field_with_its_docstring(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    docs = cli.field_docs(PPOConfig)
    for name in PPOConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text, name
        assert docs[name] in text, name
    for flag in ("--env", "--preset", "--num-seeds", "--config", "--out", "--no-progress",
                 "--overwrite", "--checkpoint-every", "--resume", "--seed"):
        assert flag in text


def test_default_output_directory_is_new(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, replace = cli._out_dir(None, "CartPole-v1", overwrite=False)
    assert re.fullmatch(r"runs/CartPole-v1-\d{8}-\d{6}", path.as_posix()) and not replace
    path.mkdir(parents=True)
    again, _ = cli._out_dir(None, "CartPole-v1", overwrite=False)
    assert again != path and not again.exists()


def test_diverging_run_exits_with_the_first_bad_update(work, cli_env):
    """A deliberately exploding configuration: exit 1, the first NaN update named, params kept."""
    proc = run_cli(["train", "--env", "Pendulum-v1", *TINY, "--lr", "1e12", "--max-grad-norm",
                    "1e30", "--no-anneal-lr", "--no-progress", "--out", "NAN"], work, cli_env)
    assert proc.returncode == 1, proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert "diverged: update" in message and "seed 0" in message
    summary = json.loads((work / "NAN" / "summary.json").read_text())
    (seed, update), = summary["first_nonfinite_update"].items()
    assert f"update {update} " in message
    loaded = purejaxppo.load(work / "NAN")
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(loaded.params))


KILL_DURING_SAVE = """
import os, signal, sys
real_fsync = os.fsync
def fsync(fd):
    real_fsync(fd)
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return
    if "ckpt-00000008" in target and target.endswith(".tmp"):
        os.kill(os.getpid(), signal.SIGKILL)  # killed after writing, before the rename
os.fsync = fsync
from purejaxppo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_run_killed_mid_checkpoint_write_resumes_from_the_previous_one(run_a, work, cli_env):
    args = ["train", *TINY, "--num-seeds", "2", "--seed", "5", "--checkpoint-every", "4",
            "--no-progress", "--out", "KILLED"]
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, *args], cwd=work,
                            env=cli_env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr
    folder = work / "KILLED" / "checkpoints"
    assert (folder / "latest").read_text().strip() == "ckpt-00000004.msgpack"
    leftovers = list(folder.glob(".*.tmp"))
    assert len(leftovers) == 1 and "ckpt-00000008" in leftovers[0].name
    loaded = purejaxppo.load(work / "KILLED")  # the previous checkpoint is intact
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(loaded.params))

    resumed = run_cli(["train", "--resume", "KILLED", "--no-progress"], work, cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from checkpoints/ckpt-00000004.msgpack (update 4 of 8)" in resumed.stdout
    assert "incomplete checkpoint write" in resumed.stdout
    assert not list(folder.glob(".*.tmp"))
    # And it finishes exactly where the uninterrupted run A finished.
    a, b = run_a[0], work / "KILLED"
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()

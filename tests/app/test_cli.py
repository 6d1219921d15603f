"""The purejaxppo command as a user runs it (a subprocess): outputs, resume, eval, bad input.

Runs are tiny (conftest's TINY_FLAGS: 8 updates of 4 envs x 64 steps, 2 seeds); the
subprocesses share a compilation cache, so a program compiled by one run is reused by the next
run of the same shapes: run A's programs (chunks of 4 updates) by the killed-and-resumed run, run
C's (one scan of 8) by the diverging run, whose learning rate is a traced hyperparameter.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

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
from purejaxppo.app import cli, evaluate
from purejaxppo.app.presets import (
    RunOptions,
    SettingsError,
    presets,
    read_settings_file,
    resolve,
    settings_dict,
)
from purejaxppo.config import PPOConfig
from purejaxppo.metrics import final_return
from purejaxppo.networks import init_networks
from purejaxppo.normalize import init_stats
from purejaxppo.train import make_agent, metric_names

UPDATES, SEEDS = 8, (5, 6)
RUN_A = [*TINY_FLAGS, "--num-seeds", "2", "--seed", "5"]
"""The settings of run A (and of the runs compared with it)."""


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    return cli_environment()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def run_c_started(work, cli_env, tmp_path_factory):
    """Run C: run A's settings without checkpoints, one scan of 8 updates; started before run A
    so that the two programs compile at the same time."""
    run = Background(["train", *RUN_A, "--out", "C"], work, cli_env,
                     tmp_path_factory.mktemp("run-c-logs"))
    yield run
    run.stop()


@pytest.fixture(scope="module")
def run_a(work, cli_env, run_c_started) -> tuple[Path, subprocess.CompletedProcess]:
    """2 seeds, checkpointed every 4 updates: two chunks of one compiled program."""
    proc = run_cli(["train", *RUN_A, "--checkpoint-every", "4", "--out", "A"], work, cli_env)
    assert proc.returncode == 0, proc.stderr
    return work / "A", proc


def config_of(settings: dict) -> PPOConfig:
    return PPOConfig(**{k: v for k, v in settings.items() if k in PPOConfig.__dataclass_fields__})


def test_train_writes_every_output(run_a):
    out, proc = run_a
    config = json.loads((out / "config.json").read_text())
    # Preset values, overridden by the flags; the file is itself a valid --config file.
    assert config["env"] == "CartPole-v1" and config["preset"] == "CartPole-v1"
    assert config["total_timesteps"] == 2048 and config["num_envs"] == 4
    assert config["lr"] == 2.5e-4 and config["num_seeds"] == 2 and config["seed"] == 5
    assert config["network"] == "mlp" and config["update_rule"] == "ppo"
    assert config["imports"] == [] and config["checkpoint_every"] == 4
    assert resolve({}, read_settings_file(out / "config.json")).config == config_of(config)

    rows = read_csv(out / "metrics.csv")
    assert len(rows) == UPDATES * len(SEEDS)
    assert list(rows[0])[:3] == ["update", "seed", "env_steps"]
    # PPO's columns: the common ones and the rule's (kl_beta only with the kl_penalty loss).
    assert set(rows[0]) == {"update", "seed", *metric_names(config_of(config))}
    assert "clip_fraction" in rows[0] and "kl_beta" not in rows[0] and "trpo_kl" not in rows[0]
    assert [(int(r["update"]), int(r["seed"])) for r in rows[:3]] == [(1, 5), (1, 6), (2, 5)]
    assert int(rows[-1]["env_steps"]) == 2048
    assert all(np.isfinite(float(r["policy_loss"])) for r in rows)
    assert all(int(r["nonfinite"]) == 0 for r in rows)

    summary = json.loads((out / "summary.json").read_text())
    finals = []
    for seed in SEEDS:
        returns = [float(r["episode_return"]) for r in rows if int(r["seed"]) == seed]
        assert np.isfinite(returns[-1])  # CartPole episodes have ended by the last update
        finals.append(returns[-1])  # 5% of 8 updates: the last one
        assert final_return(np.array(returns)) == pytest.approx(returns[-1])
    assert summary["final_return"]["per_seed"] == pytest.approx(finals)
    assert summary["final_return"]["mean"] == pytest.approx(np.mean(finals))
    assert summary["final_return"]["std"] == pytest.approx(np.std(finals))
    assert summary["num_updates"] == UPDATES and summary["seeds"] == list(SEEDS)
    assert summary["compile_time_s"] > 0 and summary["run_time_s"] > 0
    assert summary["env_steps_per_s"] > 0
    assert summary["first_nonfinite_update"] is None and summary["resumed_from_update"] is None
    assert {"jax", "flax", "gymnax", "purejaxppo"} <= set(summary["versions"])
    # The CLI makes one CPU device per core (use_cpu_cores) and splits the seeds over them.
    cores = len(os.sched_getaffinity(0))
    split = ", seeds split over 2" if cores >= 2 else ""
    assert summary["device"] == f"cpu ({cores} x cpu{split})"

    assert (out / "returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["ckpt-00000004.msgpack", "ckpt-00000008.msgpack", "latest"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "ckpt-00000008.msgpack"

    assert proc.stdout.startswith("Training PPO (ppo_clip) on CartPole-v1 (preset CartPole-v1), 2 seeds x "
                                  "8 updates of 256 steps -> A/\n")
    assert "final return" in proc.stdout and f"{summary['final_return']['mean']:.2f}" in proc.stdout
    assert "updates [" not in proc.stdout  # no progress bar: stdout is not a terminal
    assert proc.stderr == ""
    assert not [p for p in out.rglob(".*.tmp")]


def test_chunked_run_equals_one_program(run_a, run_c_started, work):
    out, _ = run_a
    proc = run_c_started.result()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert sorted(p.name for p in (work / "C" / "checkpoints").iterdir()) == [
        "ckpt-00000008.msgpack", "latest"]
    final = "checkpoints/ckpt-00000008.msgpack"
    assert (work / "C" / final).read_bytes() == (out / final).read_bytes()
    assert (work / "C" / "metrics.csv").read_text() == (out / "metrics.csv").read_text()


def test_eval_prints_mean_return(run_a, work, cli_env):
    proc = run_cli(["eval", "A", "--episodes", "6", "--deterministic"], work, cli_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("CartPole-v1: checkpoint at update 8 of 8, deterministic "
                                  "policy, 6 episodes x 2 seeds\n")
    m = re.search(r"return (-?[\d.]+) ± ([\d.]+)", proc.stdout)
    assert m, proc.stdout
    assert 8.0 <= float(m.group(1)) <= 500.0  # CartPole episodes last 8 to 500 steps
    assert "per seed:" in proc.stdout and proc.stderr == ""


def test_load_and_policy(run_a):
    out, _ = run_a
    run = purejaxppo.load(out)
    assert isinstance(run, evaluate.Loaded) and purejaxppo.Loaded is evaluate.Loaded
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
    with pytest.raises(ValueError, match="does not end in"):
        purejaxppo.policy(run.config)(run.params, jnp.zeros(3), jax.random.key(0))
    with pytest.raises(ValueError, match="out of range"):
        purejaxppo.load(out, seed=2)


def fresh_params(config: PPOConfig) -> dict:
    agent = make_agent(config)
    return init_networks(jax.random.key(0), agent.nets, agent.env.obs_size)


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


def test_gif_of_a_classic_control_episode(tmp_path):
    """One gymnasium renderer draws every step of a CartPole-v1 episode."""
    from PIL import Image

    config = PPOConfig(env="CartPole-v1", num_envs=2, num_steps=8, total_timesteps=16,
                       num_minibatches=1, hidden_sizes=(8,))
    params = jax.tree.map(lambda x: x[None], fresh_params(config))
    loaded = evaluate.Loaded(config, params, None, 0)
    ret, length = evaluate.render_gif(loaded, tmp_path / "cp.gif", jax.random.key(0),
                                      deterministic=False, max_steps=40)
    assert 1 <= length <= 40 and ret == float(length)  # CartPole pays 1 per step
    with Image.open(tmp_path / "cp.gif") as gif:
        assert gif.size == (600, 400) and gif_duration_ms(gif) == 50 * length


def test_gif_of_a_minatar_episode(tmp_path):
    config = PPOConfig(env="Breakout-MinAtar", num_envs=2, num_steps=8, total_timesteps=16,
                       num_minibatches=1, hidden_sizes=(8,))
    params = jax.tree.map(lambda x: x[None], fresh_params(config))  # a seed axis, as load gives
    loaded = evaluate.Loaded(config, params, None, 0)
    ret, length = evaluate.render_gif(loaded, tmp_path / "ep.gif", jax.random.key(0),
                                      deterministic=False, max_steps=12)
    assert 1 <= length <= 12
    assert (tmp_path / "ep.gif").read_bytes()[:6] in (b"GIF87a", b"GIF89a")


def gif_duration_ms(gif) -> int:
    total = 0
    for i in range(gif.n_frames):
        gif.seek(i)
        total += gif.info["duration"]
    gif.seek(0)
    return total


class Corridor:
    """Walk right from cell 0 to cell 9 (the README's adapter example), truncated at 12 steps."""

    observation_space = envs.Box.of((2,), 0.0, 1.0)
    action_space = envs.Discrete(2)
    max_episode_steps = 12

    def reset(self, key):
        return self.observe(jnp.int32(0)), jnp.int32(0)

    def transition(self, key, position, action):
        position = jnp.clip(position + 2 * action - 1, 0, 9)
        done = position == 9
        return self.observe(position), position, done * 1.0, done, False

    def observe(self, position):
        return jnp.stack([position / 9.0, 1.0 - position / 9.0])


class DrawnCorridor(Corridor):
    def render(self, states):
        """A 10-cell strip per state, the walker's cell white."""
        frames = np.zeros((len(states), 16, 160, 3), np.uint8)
        for t, position in enumerate(np.asarray(states)):
            frames[t, :, 16 * position:16 * (position + 1)] = 255
        return frames


def test_gif_drawn_by_an_adapter_and_one_that_cannot_draw(tmp_path):
    """An adapter's render(states) draws every step of the episode (the time limit's wrapper
    taken off); an adapter without it is refused with the reason."""
    from PIL import Image

    envs.register("DrawnCorridor-test", DrawnCorridor)
    envs.register("Corridor-test", Corridor)
    try:
        config = PPOConfig(env="DrawnCorridor-test", num_envs=2, num_steps=8,
                           total_timesteps=16, num_minibatches=1, hidden_sizes=(8,))
        assert evaluate.gif_requirements(make_agent(config).env) is None
        params = jax.tree.map(lambda x: x[None], fresh_params(config))
        loaded = evaluate.Loaded(config, params, None, 0)
        ret, length = evaluate.render_gif(loaded, tmp_path / "c.gif", jax.random.key(0),
                                          deterministic=False)
        assert length == 12 and ret == 0.0  # a random walk does not reach cell 9 in 12 steps
        with Image.open(tmp_path / "c.gif") as gif:
            # Pillow merges a frame equal to the one before into it, adding up their durations.
            assert gif.size == (160, 16) and gif_duration_ms(gif) == 12 * 50
            first = np.asarray(gif.convert("RGB"))
        assert first[:, :16].min() == 255 and first[:, 16:].max() == 0  # starts in cell 0
        plain = make_agent(dataclasses.replace(config, env="Corridor-test")).env
        assert "Corridor-test cannot be drawn: its adapter has no render(states) method" in (
            evaluate.gif_requirements(plain))
    finally:
        envs.unregister("DrawnCorridor-test")
        envs.unregister("Corridor-test")


def test_settings_the_update_rule_ignores_are_named_in_a_warning(run_c_started, work, cli_env):
    """TRPO reads no policy loss or entropy bonus: naming them (by flag or in a settings file)
    trains as asked, with one warning line; PPO has no KL limit. A run's config.json holds every
    setting, so replaying it warns about none (before: the ones at their defaults too)."""
    run_c_started.result()
    (work / "trpo.json").write_text('{"ent_coef": 0.02}')
    proc = run_cli(["train", *TINY_FLAGS, "--update-rule", "trpo", "--policy-loss", "kl_penalty",
                    "--config", "trpo.json", "--no-progress", "--out", "TRPO-UNUSED"], work,
                   cli_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "purejaxppo: warning: --policy-loss, --ent-coef are not used by --update-rule trpo; "
        "drop them"], proc.stderr
    proc = run_cli(["train", *TINY_FLAGS, "--max-kl", "0.02", "--no-progress",
                    "--out", "PPO-UNUSED"], work, cli_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "purejaxppo: warning: --max-kl is not used by --update-rule ppo; drop it"], proc.stderr
    for run, words in (("PPO-UNUSED", "--max-kl is"), ("TRPO-UNUSED", "--policy-loss, --ent-coef are")):
        proc = run_cli(["train", "--config", f"{run}/config.json", "--no-progress",
                        "--out", f"{run}-AGAIN"], work, cli_env)
        assert proc.returncode == 0, proc.stderr
        assert f"purejaxppo: warning: {words} not used" in proc.stderr, proc.stderr
    (work / "PPO-UNUSED" / "config.json").write_text(json.dumps(
        {**json.loads((work / "PPO-UNUSED" / "config.json").read_text()), "max_kl": 0.01}))
    proc = run_cli(["train", "--config", "PPO-UNUSED/config.json", "--no-progress",
                    "--out", "PPO-DEFAULTS"], work, cli_env)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def test_diverging_run_exits_with_the_first_bad_update(run_c_started, work, cli_env):
    """A deliberately exploding configuration: exit 1, the first NaN update named, params kept.

    Adam moves each parameter by about ``lr`` per step, so lr 1e38 overflows float32 at once.
    Only traced hyperparameters differ from run C: its compiled program is reused.
    """
    run_c_started.result()  # compiled and cached by now
    proc = run_cli(["train", *TINY_FLAGS, "--num-seeds", "2", "--lr", "1e38",
                    "--max-grad-norm", "1e30", "--no-progress", "--out", "NAN"], work, cli_env)
    assert proc.returncode == 1, proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert "diverged: update" in message
    summary = json.loads((work / "NAN" / "summary.json").read_text())
    bad = summary["first_nonfinite_update"]
    assert set(bad) == {"0", "1"}  # both seeds
    seed, update = min(bad.items(), key=lambda kv: kv[1])
    assert f"update {update} (seed {seed})" in message
    rows = read_csv(work / "NAN" / "metrics.csv")
    assert any(int(r["nonfinite"]) for r in rows)
    # The reported update is the metrics.csv row (numbered from 1) that first flags it.
    first_flagged = min(int(r["update"]) for r in rows
                        if int(r["nonfinite"]) and r["seed"] == str(seed))
    assert int(update) == first_flagged
    loaded = purejaxppo.load(work / "NAN", seed=None)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(loaded.params))


# --- A run killed while writing a checkpoint, and resumed.


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
from purejaxppo.app.cli import main
sys.exit(main(sys.argv[1:]))
"""


class Killed(NamedTuple):
    killed: subprocess.CompletedProcess
    latest: str
    """checkpoints/latest right after the kill."""
    leftovers: list[str]
    """Temporary files in checkpoints/ right after the kill."""
    params: dict
    """``purejaxppo.load`` of the run directory right after the kill."""
    resumed: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def killed(run_a, work, cli_env) -> Killed:
    """Run A again, killed between writing its final checkpoint and renaming it; then resumed."""
    args = ["train", *RUN_A, "--checkpoint-every", "4", "--no-progress", "--out", "KILLED"]
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, *args], cwd=work,
                          env=cli_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr
    folder = work / "KILLED" / "checkpoints"
    latest = (folder / "latest").read_text().strip()
    leftovers = [p.name for p in folder.glob(".*.tmp")]
    params = purejaxppo.load(work / "KILLED").params
    resumed = run_cli(["train", "--resume", "KILLED", "--no-progress"], work, cli_env)
    return Killed(proc, latest, leftovers, params, resumed)


def test_run_killed_mid_checkpoint_write_resumes_from_the_previous_one(killed, work):
    assert killed.latest == "ckpt-00000004.msgpack"
    assert len(killed.leftovers) == 1 and "ckpt-00000008" in killed.leftovers[0]
    # The previous checkpoint is intact.
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(killed.params))

    resumed = killed.resumed
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(
        "Resuming from checkpoints/ckpt-00000004.msgpack (update 4 of 8)\n")
    assert "incomplete checkpoint write" in resumed.stdout
    assert "Resuming PPO (ppo_clip) on CartPole-v1" in resumed.stdout and "resumed at" in resumed.stdout
    assert not list((work / "KILLED" / "checkpoints").glob(".*.tmp"))


def test_resume_equals_uninterrupted_bit_for_bit(killed, run_a, work):
    assert killed.resumed.returncode == 0, killed.resumed.stderr
    a, b = run_a[0], work / "KILLED"
    final = "checkpoints/ckpt-00000008.msgpack"
    assert (b / final).read_bytes() == (a / final).read_bytes()
    assert (b / "metrics.csv").read_text() == (a / "metrics.csv").read_text()
    assert json.loads((b / "summary.json").read_text())["resumed_from_update"] == 4
    assert (b / "returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- Bad input: one line on stderr naming the problem and the fix, exit code 2, nothing written.


BAD_INPUTS = {
    "unknown env": (["--env", "CartPol-v1", "--out", "bad"], "Did you mean 'CartPole-v1'"),
    "existing output": (["--out", "A"], "already exists; pass --overwrite"),
    "resume corrupt checkpoint": (["--resume", "K"], "is corrupt"),
    "cnn on flat observations": (["--network", "cnn", "--out", "bad"],
                                 "network='cnn' needs [height, width, channels] observations"),
}
"""Case -> (arguments, expected part of the message), run as subprocesses beside run A."""

MORE_BAD_INPUTS = {
    "preset for another env": (["--env", "Acrobot-v1", "--preset", "CartPole-v1", "--out", "bad"],
                               "preset 'CartPole-v1' (--preset) is for CartPole-v1"),
    "minibatches do not divide": (["--num-minibatches", "3", "--out", "bad"],
                                  "must divide num_envs * num_steps = 512; set --num-minibatches"),
    "zero envs": (["--num-envs", "0", "--out", "bad"], "num_envs=0 is invalid"),
    "negative lr": (["--lr", "-0.1", "--out", "bad"], "lr=-0.1 is invalid: must be > 0"),
    "missing config file": (["--config", "nope.json", "--out", "bad"], "does not exist"),
    "corrupt config file": (["--config", "corrupt.json", "--out", "bad"], "not valid JSON"),
    "resume without checkpoint": (["--resume", "nockpt"], "has no checkpoint"),
    "unknown preset": (["--preset", "Cartpole", "--out", "bad"], "did you mean 'CartPole-v1'"),
    "zero seeds": (["--num-seeds", "0", "--out", "bad"], "num_seeds=0 is invalid"),
    "not a number": (["--num-envs", "four", "--out", "bad"], "invalid int value: 'four'"),
    "unknown flag": (["--num-env", "8", "--out", "bad"], "did you mean --num-envs?"),
    "unknown config key": (["--config", "unknown.json", "--out", "bad"],
                           "unknown setting 'learning_rate'"),
    "overwrite a non-run": (["--out", "notrun", "--overwrite"], "not a purejaxppo run directory"),
    "existing run": (["--out", "A"], "'A' already exists; pass --overwrite to replace it, "
                                     "--resume A to continue it, or choose another --out"),
    # A run killed before its first checkpoint cannot be resumed: --resume is not offered.
    "existing run, no checkpoint": (["--out", "nockpt"], "'nockpt' already exists; pass "
                                    "--overwrite to replace it or choose another --out"),
    "resume with new settings": (["--resume", "A", "--lr", "0.1"], "cannot take --lr"),
    "resume with imports": (["--resume", "A", "--imports", "mod"], "cannot take --imports"),
    "unknown network": (["--network", "transformer", "--out", "bad"],
                        "unknown network 'transformer'"),
    "recurrent minibatches": (["--network", "gru", "--num-minibatches", "8", "--out", "bad"],
                              "num_minibatches=8 must divide num_envs=4 for the recurrent"),
    "eval corrupt checkpoint": (["eval", "K"], "is corrupt"),
    "eval missing run": (["eval", "nowhere"], "does not exist"),
    "eval zero episodes": (["eval", "A", "--episodes", "0"], "must be a positive integer"),
    "unknown command": (["evaluate", "A"], "did you mean 'eval'"),
    "gif without renderer": (["eval", "A", "--gif", "a.gif"], "pip install 'purejaxppo[render]'"),
    "out under a file": (["--out", "corrupt.json/run"], "is a file, not a directory"),
    "unwritable out": (["--out", "/sys/purejaxppo-run"], "cannot write in '/sys'"),
    "huge number of envs": (["--num-envs", "1000000000", "--num-steps", "2",
                             "--num-minibatches", "1", "--total-timesteps", "2000000000",
                             "--out", "bad"], "needs about"),
    "a million seeds": (["--num-seeds", "1000000", "--total-timesteps", "512", "--out", "bad"],
                        "lower --num-seeds"),
    "overflowing budget": (["--total-timesteps", "10000000000000000000000", "--out", "bad"],
                           "must be at most 2,147,483,647"),
    "seed past 32 bits": (["--seed", "4294967301", "--out", "bad"], "at most 4294967295"),
    "empty settings file": (["--config", "empty.yaml", "--out", "bad"], "is empty"),
    "eval a billion episodes": (["eval", "A", "--episodes", "1000000000"], "lower --episodes"),
    "eval gif without .gif": (["eval", "A", "--gif", "noext"], "must name a .gif file"),
    "eval negative seed": (["eval", "A", "--seed", "-1"], "--seed -1 is invalid"),
    "eval seed index out of range": (["eval", "A", "--seed-index", "2"], "out of range"),
    "train seed index out of range": (["--num-seeds", "2", "--seed-index", "2", "--out", "bad"],
                                      "--seed-index 2 is out of range: the run has 2 seeds"),
    "resume with a seed index": (["--resume", "A", "--seed-index", "0"],
                                 "cannot take --seed-index"),
    "copies of several seeds": (["--num-seeds", "2", "--batched-as", "2", "--out", "bad"],
                                "copies are for one seed"),
    "eval missing checkpoint": (["eval", "A", "--checkpoint", "3"],
                                "no checkpoint at update 3; it has 4, 8"),
    "settings file with an infinite width": (["--config", "inf.json", "--out", "bad"],
                                             "PPOConfig.hidden_sizes=[inf] is invalid"),
    "settings file with a 400-digit lr": (["--config", "hugelr.json", "--out", "bad"],
                                          "must be a finite number"),
    "settings file with null imports": (["--config", "impnull.json", "--out", "bad"],
                                        "imports=None is invalid: must be a list of module names"),
    "settings file with a number for preset": (["--config", "presetnum.json", "--out", "bad"],
                                               "preset=5 is invalid: must be a preset name"),
    "settings file with a list for policy_loss": (["--config", "losslist.json", "--out", "bad"],
                                                  "policy_loss=['ppo_clip'] is invalid"),
    "eval a run whose latest is a directory": (["eval", "L"], "cannot read"),
    "resume a run whose lock is a directory": (["--resume", "H"],
                                               "is a directory, where purejaxppo keeps the lock"),
    "process flag not a number": (["--local-devices", "abc", "--out", "bad"],
                                  "argument --local-devices: invalid int value: 'abc'"),
    "coordinator port of other digits": (["--coordinator", "h:\u00b2", "--num-processes", "2",
                                          "--process-id", "0", "--out", "bad"],
                                         "is not HOST:PORT"),
    "out name too long": (["--out", "a" * 300], "File name too long"),
    "eval max steps past int32": (["eval", "A", "--max-steps", "10000000000"],
                                  "at most 2,147,483,647"),
    "imports a module that exits": (["--imports", "exitmod", "--out", "bad"],
                                    "module 'exitmod' (given by --imports) called sys.exit(0)"),
    "eval beside a stray checkpoint file": (["eval", "S", "--checkpoint", "3"],
                                            "no checkpoint at update 3; it has 4, 8"),
    "a billion evaluation episodes in training": (["--eval-every", "1", "--eval-episodes",
                                                   "1000000000", "--out", "bad"],
                                                  "or --eval-episodes"),
    "out is the current directory": (["--out", ".", "--overwrite"],
                                     "--out '.' is the current directory or one above it"),
    "out is empty": (["--out", ""], "--out '' is the current directory or one above it"),
    "out is a parent directory": (["--out", "..", "--overwrite"], "or one above it"),
    "settings file not UTF-8": (["--config", "binary.json", "--out", "bad"],
                                "config file 'binary.json' (given to --config) is not UTF-8"),
    "two billion update epochs": (["--update-epochs", "2000000000", "--total-timesteps", "512",
                                   "--out", "bad"], "--update-epochs"),
    "two billion TRPO critic epochs": (["--update-rule", "trpo", "--update-epochs", "2000000000",
                                        "--num-minibatches", "512", "--total-timesteps", "512",
                                        "--out", "bad"], "--update-epochs"),
    "eval gif into a directory": (["eval", "A", "--gif", "d.gif"],
                                  "--gif 'd.gif' is a directory; name a file in it"),
    "eval gif where nothing can be written": (["eval", "A", "--gif", "/sys/a.gif"],
                                              "its directory cannot be written"),
    "resume a checkpoint of another config": (
        ["--resume", "M"], "needs float32[2, 32]: it was written for another config (resume or "
                           "evaluate it with the config.json it was trained with)"),
}
"""The same checks, through ``cli.main`` in this process (a subprocess costs ~3 s of imports):
the same code path up to the exit code, so the subprocesses above keep one case per depth of
checking: settings, networks (make_agent), output directory, checkpoint."""



@pytest.fixture(scope="module")
def bad_setup(run_a, run_c_started, work) -> Path:
    run_c_started.result()  # nothing else writes into work while the bad inputs are checked
    (work / "corrupt.json").write_text('{"lr": 0.001,')
    (work / "unknown.json").write_text('{"learning_rate": 0.001}')
    (work / "empty.yaml").write_text("")
    (work / "notrun").mkdir()
    (work / "notrun" / "keep.txt").write_text("mine")
    (work / "nockpt").mkdir()
    shutil.copy(work / "A" / "config.json", work / "nockpt" / "config.json")
    shutil.copytree(work / "A", work / "K")
    ckpt = work / "K" / "checkpoints" / "ckpt-00000008.msgpack"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated, as by a full disk
    # Run A halfway, its config edited after the fact: the checkpoint no longer fits it, which
    # only restoring it finds.
    shutil.copytree(work / "A", work / "M")
    (work / "M" / "checkpoints" / "latest").write_text("ckpt-00000004.msgpack")
    settings = json.loads((work / "M" / "config.json").read_text())
    (work / "M" / "config.json").write_text(json.dumps({**settings, "hidden_sizes": [32, 32]}))
    # Settings files of the wrong types, and run directories edited by hand.
    (work / "inf.json").write_text('{"hidden_sizes": [1e999]}')
    (work / "hugelr.json").write_text('{"lr": 1' + "0" * 400 + "}")
    (work / "impnull.json").write_text('{"imports": null}')
    (work / "presetnum.json").write_text('{"preset": 5}')
    (work / "losslist.json").write_text('{"policy_loss": ["ppo_clip"]}')
    (work / "exitmod.py").write_text("import sys\nsys.exit(0)\n")
    (work / "binary.json").write_bytes(b"\xff\xfe{}")
    (work / "d.gif").mkdir()
    shutil.copytree(work / "A", work / "L")
    (work / "L" / "checkpoints" / "latest").unlink()
    (work / "L" / "checkpoints" / "latest").mkdir()
    shutil.copytree(work / "M", work / "H")
    shutil.copy(work / "A" / "config.json", work / "H" / "config.json")
    (work / ".H.lock").mkdir()
    shutil.copytree(work / "A", work / "S")
    (work / "S" / "checkpoints" / "ckpt-old.msgpack").write_bytes(b"a stray file")
    return work


@pytest.fixture(scope="module")
def bad_runs(bad_setup, cli_env) -> dict[str, subprocess.CompletedProcess]:
    """Every bad input, run three at a time; none may write anything."""
    work = bad_setup
    before = listing(work)
    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = pool.map(lambda args: run_cli(args, work, cli_env),
                         [a for a, _ in BAD_INPUTS.values()])
        results = dict(zip(BAD_INPUTS, procs, strict=True))
    assert listing(work) == before
    return results


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_code_2(bad_runs, case):
    proc = bad_runs[case]
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, BAD_INPUTS[case][1])


def test_unknown_env_message_lists_the_environments(bad_runs):
    line = bad_runs["unknown env"].stderr.strip()
    assert "unknown environment 'CartPol-v1'" in line and "Breakout-MinAtar" in line
    assert line.endswith("(register your own with purejaxppo.envs.register)")


@pytest.mark.parametrize("case", list(MORE_BAD_INPUTS))
def test_more_bad_input_in_process(bad_setup, case, capsys, monkeypatch):
    if case.startswith("gif"):  # as on a machine without pygame, whether or not this one has it
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "pygame" else find_spec(name, *a))
    monkeypatch.chdir(bad_setup)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "")  # leave this process's jax config alone
    before = listing(bad_setup)
    args, expected = MORE_BAD_INPUTS[case]
    code = cli.main(args)
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err, expected)
    assert listing(bad_setup) == before


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
    assert resolve({}, {"env": "Pendulum-v1"}).config.gamma == 0.98
    assert resolve({"env": "CartPole-v1"}, {"env": "Pendulum-v1"}).config.env == "CartPole-v1"
    no_preset = resolve({"env": "Catch-bsuite", "total_timesteps": 4096})
    assert no_preset.preset is None and no_preset.config.lr == PPOConfig.lr
    # Settings the presets do not hold keep PPOConfig's defaults.
    assert acro.config.network == "mlp" and acro.config.update_rule == "ppo"
    assert acro.options == RunOptions()


def test_imports_setting(tmp_path, monkeypatch):
    """``imports`` is imported before the env is checked; config.json keeps it as a list."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(tmp_path)
    (tmp_path / "settings_probe_module.py").write_text("IMPORTED = True\n")
    (tmp_path / "broken_probe_module.py").write_text("1 / 0\n")
    try:
        resolved = resolve({"imports": ["settings_probe_module"]})
        assert resolved.options.imports == ("settings_probe_module",)
        assert sys.modules["settings_probe_module"].IMPORTED
        assert settings_dict(*resolved)["imports"] == ["settings_probe_module"]
        with pytest.raises(SettingsError, match="must be a list of module names"):
            RunOptions(imports="settings_probe_module")
        with pytest.raises(SettingsError, match="'broken_probe_module'.*ZeroDivisionError"):
            resolve({"imports": ["broken_probe_module"]})
    finally:
        sys.modules.pop("settings_probe_module", None)


def test_every_preset_is_valid_and_runs_whole_batches():
    assert {"CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1",
            "MountainCarContinuous-v0", "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar",
            "SpaceInvaders-MinAtar", "Seaquest-MinAtar"} <= set(presets())
    suite_packages = {"brax": "brax", "playground": "mujoco_playground", "jumanji": "jumanji",
                      "craftax": "craftax", "navix": "navix", "xminigrid": "xminigrid"}
    checked = 0
    for name, preset in presets().items():
        suite = preset.env.split(":", 1)[0] if ":" in preset.env else None
        if suite is not None and importlib.util.find_spec(suite_packages[suite]) is None:
            # A suite preset needs its extra to resolve (envs.make); its numbers still must be
            # whole rollouts.
            config = PPOConfig(**{**preset.config, "env": "CartPole-v1"})
        else:
            config = resolve({"preset": name}).config
            assert config.env == preset.env
            checked += 1
        assert preset.source, name
        assert config.total_timesteps % config.batch_size == 0, name
    assert checked >= 10


def test_yaml_settings_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("env: Acrobot-v1\nlr: 0.001\nhidden_sizes: [32, 32]\nnum_seeds: 2\n"
                    "imports: []\nnetwork: mlp\n")
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
    run_docs = cli.field_docs(RunOptions)
    for name in RunOptions.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text, name
        assert run_docs[name] in text, name
    for flag in ("--env", "--preset", "--num-seeds", "--config", "--out", "--no-progress",
                 "--overwrite", "--checkpoint-every", "--resume", "--seed", "--network",
                 "--imports MODULE [MODULE ...]", "--hidden-sizes N [N ...]"):
        assert flag in text


def test_default_output_directory_is_new(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, replace = cli._out_dir(None, "CartPole-v1", overwrite=False)
    assert re.fullmatch(r"runs/CartPole-v1-\d{8}-\d{6}", path.as_posix()) and not replace
    path.mkdir(parents=True)
    again, _ = cli._out_dir(None, "CartPole-v1", overwrite=False)
    assert again != path and not again.exists()

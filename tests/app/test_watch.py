"""Watching a run and trusting it: live metrics.csv, TensorBoard and W&B logs, evaluation inside
the program, Ctrl-C that saves the work (with and without a terminal), --overwrite that keeps
the old run until the new one is done, and the options of eval."""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from cli_helpers import Background, cli_environment, read_csv, run_cli
from conftest import TINY_FLAGS

DEFAULT_ROWS = 976  # the default run: CartPole-v1's preset, 976 updates


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    return cli_environment()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("watch")


def rows_of(path: Path) -> int:
    try:
        with open(path) as f:
            return max(0, sum(1 for _ in f) - 1)
    except FileNotFoundError:
        return 0


def as_in_a_terminal() -> None:
    """Ctrl-C's default disposition in the child, as a command typed in a terminal has: the tests
    may run under a shell that started them in the background, which ignores SIGINT (and Python
    then never turns it into KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], cwd: Path, env: dict[str, str], tty: bool = False
          ) -> tuple[subprocess.Popen, int | None]:
    """``python -m purejaxppo ARGS``, its stdout a pseudo-terminal when ``tty`` (progress bar
    on). Returns ``(process, the terminal's reading end or None)``."""
    if tty:
        reader, writer = pty.openpty()
        fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        proc = subprocess.Popen([sys.executable, "-m", "purejaxppo", *args], cwd=cwd, env=env,
                                stdout=writer, stderr=subprocess.PIPE, text=True,
                                preexec_fn=as_in_a_terminal)
        os.close(writer)
        return proc, reader
    proc = subprocess.Popen([sys.executable, "-m", "purejaxppo", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_in_a_terminal)
    return proc, None


def drain(fd: int | None) -> str:
    """What the pseudo-terminal received (the progress bar), without blocking on an empty one."""
    if fd is None:
        return ""
    out = b""
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


@pytest.fixture(scope="module")
def uninterrupted(work, cli_env) -> Path:
    """The default run, start to end: the reference for the interrupted ones."""
    proc = run_cli(["train", "--no-progress", "--out", "full"], work, cli_env)
    assert proc.returncode == 0, proc.stderr
    return work / "full"


@pytest.mark.parametrize("tty,sig", [(False, signal.SIGINT), (True, signal.SIGINT),
                                     (False, signal.SIGTERM)],
                         ids=["no terminal", "terminal with bar", "SIGTERM"])
def test_ctrl_c_saves_the_work_and_the_resumed_run_equals_the_uninterrupted_one(
        uninterrupted, work, cli_env, tty, sig):
    out = work / f"interrupted-{'tty' if tty else 'plain'}-{sig.name}"
    proc, terminal = start(["train", "--out", out.name] + ([] if tty else ["--no-progress"]),
                           work, cli_env, tty)
    try:
        deadline = time.time() + 300
        # metrics.csv grows while the program runs: rows appear before the process ends.
        while rows_of(out / "metrics.csv") < 100 and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        assert proc.poll() is None  # still training when the first rows were readable
        t0 = time.time()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        stopped_after = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    bar = drain(terminal)
    if terminal is not None:
        os.close(terminal)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and not (work / f".{out.name}.lock").exists()
    assert stopped_after < 10, stopped_after  # about a second on an idle machine
    line = err.strip().splitlines()[-1]
    assert "saved; continue with: purejaxppo train --resume" in line, err
    done = int(line.split("interrupted after ")[1].split(" of")[0].replace(",", ""))
    assert 100 <= done < DEFAULT_ROWS
    assert (out / "checkpoints" / "latest").read_text().strip() == f"ckpt-{done:08d}.msgpack"
    if tty:
        assert "updates" in bar and "steps/s" in bar  # the bar was drawn, fed between chunks
    resumed = run_cli(["train", "--resume", out.name, "--no-progress"], work, cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "metrics.csv").read_text() == (uninterrupted / "metrics.csv").read_text()
    assert ((out / "checkpoints" / f"ckpt-{DEFAULT_ROWS:08d}.msgpack").read_bytes()
            == (uninterrupted / "checkpoints" / f"ckpt-{DEFAULT_ROWS:08d}.msgpack").read_bytes())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_an_interrupt_before_the_first_update_leaves_no_directory(work, cli_env, sig):
    """Ctrl-C or SIGTERM while the run starts and compiles (its config.json already written,
    the compilation cache off so that compiling takes seconds): one line, the signal's exit code,
    and no run directory, lock or hidden new directory left behind."""
    out = work / f"early-{sig.name}"
    env = {**cli_env, "JAX_COMPILATION_CACHE_DIR": ""}
    proc, _ = start(["train", "--out", out.name, "--no-progress", "--hidden-sizes", "24", "40"],
                    work, env)
    try:
        deadline = time.time() + 120
        while not (out / "config.json").exists() and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.01)
        assert not (out / "metrics.csv").exists()  # not a single update finished yet
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    assert err.strip() == "purejaxppo: interrupted; nothing new was saved", err
    assert not out.exists()
    assert not [p.name for p in work.iterdir() if p.name.startswith(f".{out.name}")]


def test_resuming_a_finished_run_changes_nothing(uninterrupted, work, cli_env):
    before = {p.name: p.read_bytes() for p in uninterrupted.iterdir() if p.is_file()}
    proc = run_cli(["train", "--resume", uninterrupted.name], work, cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "has finished all 976 updates; nothing to resume" in proc.stdout
    assert {p.name: p.read_bytes() for p in uninterrupted.iterdir() if p.is_file()} == before


def test_overwrite_keeps_the_old_run_until_the_new_one_is_done_and_locks_out_others(
        uninterrupted, work, cli_env, tmp_path):
    target = work / "replaced"
    first = run_cli(["train", *TINY_FLAGS, "--no-progress", "--out", target.name], work, cli_env)
    assert first.returncode == 0, first.stderr
    old_config = json.loads((target / "config.json").read_text())
    new = Background(["train", "--no-progress", "--seed", "7", "--out", target.name,
                      "--overwrite"], work, cli_env, tmp_path)
    try:
        lock = work / f".{target.name}.lock"
        deadline = time.time() + 300
        while not lock.exists() and time.time() < deadline:
            time.sleep(0.05)
        # While the new run trains, the old one is intact, and a second writer is refused.
        assert json.loads((target / "config.json").read_text()) == old_config
        second = run_cli(["train", *TINY_FLAGS, "--no-progress", "--out", target.name,
                          "--overwrite"], work, cli_env)
        assert second.returncode == 2
        assert second.stderr.strip().startswith("purejaxppo: error: another purejaxppo run (pid")
        assert len(second.stderr.strip().splitlines()) == 1
        result = new.result()
    finally:
        new.stop()
    assert result.returncode == 0, result.stderr
    assert json.loads((target / "config.json").read_text())["seed"] == 7
    assert rows_of(target / "metrics.csv") == DEFAULT_ROWS
    assert not lock.exists()
    assert not [p for p in work.iterdir() if p.name.startswith(f".{target.name}.")]


@pytest.fixture(scope="module")
def logged(work, cli_env) -> tuple[Path, Path]:
    """A tiny 2-seed run with every live log and in-program evaluation on, and the same run
    with none of them."""
    args = ["train", *TINY_FLAGS, "--num-seeds", "2", "--seed", "3", "--no-progress"]
    on = run_cli([*args, "--out", "logged", "--tensorboard", "--wandb", "--eval-every", "4",
                  "--eval-episodes", "2", "--checkpoint-every", "2", "--keep-checkpoints", "2"],
                 work, {**cli_env, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert on.returncode == 0, on.stderr
    off = run_cli([*args, "--out", "plain"], work, cli_env)
    assert off.returncode == 0, off.stderr
    return work / "logged", work / "plain"


def test_logging_and_evaluation_change_no_result(logged):
    on, off = (read_csv(d / "metrics.csv") for d in logged)
    assert len(on) == len(off) == 16  # 8 updates x 2 seeds
    for a, b in zip(on, off, strict=True):
        assert {k: a[k] for k in b} == b  # every training metric identical, bit for bit
    for row in on:
        evaluated = int(row["update"]) % 4 == 0
        assert math.isnan(float(row["eval_return"])) != evaluated, row
        if evaluated:
            assert 1 <= float(row["eval_length"]) <= 500 and float(row["eval_return"]) > 0


def test_tensorboard_event_files_hold_every_update_of_every_seed(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = read_csv(logged[0] / "metrics.csv")
    for seed in (3, 4):
        acc = EventAccumulator(str(logged[0] / "tensorboard" / f"seed_{seed}"))
        acc.Reload()
        mine = [r for r in rows if r["seed"] == str(seed)]
        for name in ("episode_return", "value_loss", "approx_kl", "learning_rate"):
            events = acc.Scalars(f"purejaxppo/{name}")
            assert [e.step for e in events] == list(range(1, 9))
            for event, row in zip(events, mine, strict=True):
                assert event.value == pytest.approx(float(row[name]), rel=1e-6)
        assert [e.step for e in acc.Scalars("purejaxppo/eval_return")] == [4, 8]
        config = acc.Tensors("config")[0].tensor_proto.string_val[0].decode()
        assert '"env": "CartPole-v1"' in config and '"seed": 3' in config


def test_wandb_logs_one_offline_run_per_seed(logged):
    runs = sorted((logged[0] / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    for run in runs:
        (record,) = run.glob("*.wandb")
        data = record.read_bytes()
        # Every update's history record names the metrics it logged.
        assert data.count(b"episode_return") >= 8 and b"eval_return" in data


def test_keep_checkpoints_keeps_the_newest(logged):
    names = sorted(p.name for p in (logged[0] / "checkpoints").iterdir())
    assert names == ["ckpt-00000006.msgpack", "ckpt-00000008.msgpack", "latest"]


def test_eval_picks_checkpoint_and_seed_and_prints_json(logged, work, cli_env):
    proc = run_cli(["eval", "logged", "--checkpoint", "6", "--seed-index", "1", "--episodes",
                    "3", "--json", "--deterministic"], work, cli_env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["checkpoint_update"] == 6 and result["seeds"] == [4]
    assert len(result["return_per_seed"]) == 1 and result["episodes"] == 3
    assert result["policy"] == "deterministic" and result["return_mean"] > 0


def test_version_help_and_argument_errors_come_before_jax(tmp_path):
    script = """
import contextlib, io, sys
from purejaxppo.app.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    codes = [main(["--version"]), main(["--help"])]
    for argv in (["train", "--help"], ["train", "--env", "Pendulum-v1", "--help"],
                 ["train", "--num-envs", "four"]):
        try:
            codes.append(main(argv))
        except SystemExit as e:
            codes.append(e.code)
print(codes, "jax" in sys.modules, "gymnax" in sys.modules)
print(out.getvalue())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first, help_text = proc.stdout.split("\n", 1)
    assert first == "[0, 0, 0, 0, 2] False False", first
    assert help_text.startswith("purejaxppo 0.1.0")
    # The policy-loss help names every loss; help shows the chosen preset's defaults.
    assert "kl_penalty" in help_text and "policy_gradient" in help_text
    pendulum = help_text.split("train --env ID --help")[-1]
    assert "Defaults shown are those of preset Pendulum-v1" in help_text
    assert "(default: 0.98)" in pendulum.split("--gamma")[1].split("--")[0]


def test_numeric_strings_in_yaml_are_numbers(tmp_path):
    from purejaxppo.app.presets import read_settings_file, resolve

    path = tmp_path / "s.yaml"
    path.write_text("lr: 3e-4\ntotal_timesteps: 9.984e4\nnum_seeds: '2'\nhidden_sizes: [32]\n")
    resolved = resolve({}, read_settings_file(path))
    assert resolved.config.lr == 3e-4 and resolved.config.total_timesteps == 99_840
    assert resolved.options.num_seeds == 2 and resolved.config.hidden_sizes == (32,)


def test_policy_names_the_expected_observation_shape():
    import jax.numpy as jnp

    from purejaxppo import PPOConfig, policy
    from purejaxppo.envs import make
    from purejaxppo.networks import init_networks, make_networks

    config = PPOConfig()
    env = make(config.env)
    params = init_networks(__import__("jax").random.key(0), make_networks(env, config),
                           env.obs_size)
    with pytest.raises(ValueError, match=r"observation shape \(4,\)"):
        policy(config)(params, jnp.zeros((3, 5)), deterministic=True)


def test_metrics_csv_of_a_finished_run_is_complete_csv(uninterrupted):
    with open(uninterrupted / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["update"]) for r in rows] == list(range(1, DEFAULT_ROWS + 1))


def test_the_bar_draws_on_a_terminal_that_reports_no_size(cli_env):
    """Some pseudo-terminals (a bare pty, containers, CI runners) report 0x0. Before: tqdm read
    -1 rows there and drew nothing at all."""
    reader, writer = pty.openpty()  # no TIOCSWINSZ: the terminal reports 0 rows, 0 columns
    code = ("import sys\nfrom purejaxppo.app.progress import ProgressBar\n"
            "bar = ProgressBar(total=10, done=0, steps_per_update=512, file=sys.stderr)\n"
            "bar.start()\nfor update in range(1, 11):\n    bar(update, 3.5)\nbar.close()\n")
    try:
        assert os.get_terminal_size(writer) == (0, 0)
        proc = subprocess.run([sys.executable, "-c", code], stdout=writer, stderr=writer,
                              env=cli_env, timeout=120)
        os.close(writer)
        shown = b""
        while True:
            try:
                chunk = os.read(reader, 65536)
            except OSError:  # the terminal's other end is closed: all of it was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(reader)
    assert proc.returncode == 0
    assert b"10/10 updates" in shown and b"return 3.5" in shown, shown

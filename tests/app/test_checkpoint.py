"""Checkpoints round-trip exactly, refuse what they should, are written atomically; progress
reporting does not change results."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization

from purejaxppo.app import checkpoint, experiment, outputs
from purejaxppo.app.presets import RunOptions
from purejaxppo.metrics import final_return, final_window
from purejaxppo.train import metric_names

OPTIONS = RunOptions(seed=3, num_seeds=2)
UPDATES = 8  # conftest's TINY: 2048 steps of 4 envs x 64 steps


def assert_trees_equal(a, b) -> None:
    """Bit-for-bit equality of two pytrees (typed keys compared by their key data)."""
    fa, fb = checkpoint.flatten_state(a), checkpoint.flatten_state(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        assert fa[name].dtype == fb[name].dtype, name
        np.testing.assert_array_equal(fa[name], fb[name], err_msg=name)


@pytest.fixture(scope="module")
def initial(tiny) -> experiment.Start:
    return experiment.start(tiny, OPTIONS)


@pytest.fixture(scope="module")
def metrics_like() -> dict[str, np.ndarray]:
    return {"episode_return": np.arange(6, dtype=np.float32).reshape(2, 3),
            "env_steps": np.array([[256, 512, 768]] * 2, np.int32)}


def test_round_trip_is_exact_and_keeps_typed_keys(initial, metrics_like):
    state = initial.state
    assert jax.dtypes.issubdtype(state.key.dtype, jax.dtypes.prng_key)
    data = checkpoint.to_bytes(state, metrics_like, update=3)
    assert serialization.msgpack_restore(data)["format"] == "purejaxppo-checkpoint/2"
    restored, metrics, update = checkpoint.from_bytes(state, data)
    assert update == 3
    assert_trees_equal(restored, state)
    # PPO's optimiser state holds the KL coefficient beside Adam's state.
    np.testing.assert_array_equal(restored.opt_state.kl_beta, state.opt_state.kl_beta)
    assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
    # The restored key draws the same numbers as the original.
    np.testing.assert_array_equal(jax.random.uniform(restored.key[0]),
                                  jax.random.uniform(state.key[0]))
    assert metrics.keys() == metrics_like.keys()
    for k in metrics:
        np.testing.assert_array_equal(metrics[k], metrics_like[k])
        assert metrics[k].dtype == metrics_like[k].dtype


def test_restore_into_shapes_only_template(tiny, initial, metrics_like):
    """Resuming restores into ``jax.eval_shape`` of init (nothing compiled): still exact."""
    data = checkpoint.to_bytes(initial.state, metrics_like, update=3)
    template = experiment.state_shapes(tiny, OPTIONS)
    restored, _, _ = checkpoint.from_bytes(template, data)
    assert_trees_equal(restored, initial.state)


def test_checkpoint_of_another_config_is_refused(tiny, initial, metrics_like):
    data = checkpoint.to_bytes(initial.state, metrics_like, update=3)
    wider = experiment.state_shapes(tiny.replace(hidden_sizes=(32, 32)), OPTIONS)
    with pytest.raises(checkpoint.CheckpointError, match="another config"):
        checkpoint.from_bytes(wider, data)
    one_seed = jax.tree.map(lambda x: x[:1], initial.state)
    with pytest.raises(checkpoint.CheckpointError, match="another config"):
        checkpoint.from_bytes(one_seed, data)
    # TRPO's optimiser state (the critic's Adam) is not PPO's (Adam and the KL coefficient).
    trpo = experiment.state_shapes(tiny.replace(update_rule="trpo"), OPTIONS)
    with pytest.raises(checkpoint.CheckpointError, match="another config"):
        checkpoint.from_bytes(trpo, data)


@pytest.mark.parametrize("garble", [lambda b: b[: len(b) // 2], lambda b: b"not msgpack" + b,
                                    lambda b: b""])
def test_corrupt_checkpoint_is_refused(initial, metrics_like, garble):
    data = checkpoint.to_bytes(initial.state, metrics_like, update=3)
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        checkpoint.from_bytes(initial.state, garble(data))


def test_checkpoint_of_the_previous_format_is_refused(initial, metrics_like):
    raw = serialization.msgpack_restore(checkpoint.to_bytes(initial.state, metrics_like, 3))
    raw["format"] = "purejaxppo-checkpoint/1"
    with pytest.raises(checkpoint.CheckpointError, match="another purejaxppo version"):
        checkpoint.from_bytes(initial.state, serialization.msgpack_serialize(raw))


def test_save_points_latest_at_the_newest(tmp_path, initial, metrics_like):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.latest(tmp_path)
    checkpoint.save(tmp_path, initial.state, metrics_like, 3)
    newest = checkpoint.save(tmp_path, initial.state, metrics_like, 6)
    assert checkpoint.latest(tmp_path) == newest
    assert newest.name == "ckpt-00000006.msgpack"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "ckpt-00000003.msgpack", "ckpt-00000006.msgpack", "latest"]
    _, _, update = checkpoint.restore(tmp_path, initial.state)
    assert update == 6
    (tmp_path / "checkpoints" / "latest").write_text("ckpt-00000009.msgpack\n")
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.latest(tmp_path)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    outputs.atomic_write(target, b"old")

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        outputs.atomic_write(target, b"new contents")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]  # no temp file left behind


def test_next_chunk_lasts_about_a_second_and_stops_at_checkpoints_and_the_end():
    assert experiment.next_chunk(0, 100, 0, None) == 1  # speed unknown: one update
    assert experiment.next_chunk(0, 1000, 0, 0.01) == 100  # ~1 s of 10 ms updates
    assert experiment.next_chunk(990, 1000, 0, 0.01) == 10  # never past the end
    assert experiment.next_chunk(0, 10**6, 0, 1e-6) == experiment.MAX_CHUNK
    assert experiment.next_chunk(0, 1000, 30, 0.01) == 30  # not past a checkpoint
    assert experiment.next_chunk(45, 1000, 30, 0.001) == 15
    assert experiment.next_chunk(0, 1000, 0, 5.0) == 1  # a slow update: one at a time


@pytest.fixture(scope="module")
def plain(tiny, initial) -> experiment.Outcome:
    return experiment.train(tiny, OPTIONS, initial)


def test_progress_bar_does_not_change_results(tiny, initial, plain):
    stream = io.StringIO()
    shown = experiment.train(tiny, OPTIONS, initial, progress=stream)
    assert_trees_equal(shown.state, plain.state)
    assert plain.metrics.keys() == shown.metrics.keys()
    for k in plain.metrics:
        np.testing.assert_array_equal(shown.metrics[k], plain.metrics[k], err_msg=k)
    text = stream.getvalue()
    assert "8/8 updates" in text and "steps/s" in text and "return" in text


def test_outcome_shapes(tiny, plain):
    assert tiny.num_updates == UPDATES
    np.testing.assert_array_equal(plain.state.updates_done, [UPDATES] * OPTIONS.num_seeds)
    # PPO's metrics: the common ones and the rule's, no kl_beta without the kl_penalty loss.
    assert set(plain.metrics) == set(metric_names(tiny))
    assert "clip_fraction" in plain.metrics and "kl_beta" not in plain.metrics
    for k, v in plain.metrics.items():
        assert v.shape == (OPTIONS.num_seeds, UPDATES), k
    np.testing.assert_array_equal(plain.metrics["env_steps"][0], 256 * np.arange(1, 9))
    # Two seeds are two different runs.
    assert not np.array_equal(plain.metrics["policy_loss"][0], plain.metrics["policy_loss"][1])


def test_final_return_is_the_nan_aware_mean_of_the_last_five_percent():
    returns = np.stack([np.arange(100.0), np.zeros(100)])
    np.testing.assert_allclose(final_return(returns), [np.mean(np.arange(95, 100)), 0.0])
    assert final_window(8) == 1 and final_window(976) == 49 and final_window(1) == 1
    # Updates in which no episode had finished yet (NaN) are left out; none finished: NaN.
    late = np.arange(100.0)
    late[96:98] = np.nan
    np.testing.assert_allclose(final_return(late), np.mean([95.0, 98.0, 99.0]))
    assert np.isnan(final_return(np.full(8, np.nan)))


def test_summary_of_a_run_in_which_no_episode_finished(tmp_path, tiny, plain):
    nan = {k: (np.full_like(v, np.nan) if k == "episode_return" else v)
           for k, v in plain.metrics.items()}
    summary = experiment.write_outputs(tmp_path, tiny, OPTIONS, None, plain._replace(metrics=nan))
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    final = summary["final_return"]
    assert final["mean"] is None and final["std"] is None and final["per_seed"] == [None, None]
    assert (tmp_path / "returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[1].split(",")[rows[0].split(",").index("episode_return")] == "nan"
    table = experiment.summary_table(summary, "out")
    assert "no episode finished yet" in table and "none finished" in table
    # One seed finished an episode: mean and std are over that seed only.
    one = dict(nan, episode_return=np.stack([plain.metrics["episode_return"][0], nan[
        "episode_return"][1]]))
    final = experiment.summarize(tiny, OPTIONS, None, plain._replace(metrics=one))["final_return"]
    assert final["per_seed"][1] is None
    assert final["mean"] == pytest.approx(final["per_seed"][0]) and final["std"] == 0.0


def test_metrics_csv_has_a_row_per_update_and_seed(tiny, plain):
    text = outputs.metrics_csv(plain.metrics, seeds=[3, 4])
    lines = text.splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["update", "seed", "env_steps"]
    assert set(header[3:]) == set(metric_names(tiny)) - {"env_steps"}
    assert len(header) == 2 + len(metric_names(tiny))
    assert len(lines) == 1 + 8 * 2
    assert lines[1].split(",")[:3] == ["1", "3", "256"]
    assert lines[-1].split(",")[:3] == ["8", "4", "2048"]
    # Cells round-trip float32 exactly.
    col = header.index("policy_loss")
    values = np.array([float(line.split(",")[col]) for line in lines[1:]], np.float32)
    np.testing.assert_array_equal(values, plain.metrics["policy_loss"].T.reshape(-1))


def test_plot_is_a_png(tmp_path, plain):
    path = Path(tmp_path) / "returns.png"
    outputs.plot_returns(path, plain.metrics["env_steps"][0], plain.metrics["episode_return"], "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_returns_with_no_finished_episode_yet(tmp_path, plain):
    returns = plain.metrics["episode_return"].copy()
    returns[:, :3] = np.nan  # the first updates, before any episode finished
    path = Path(tmp_path) / "returns.png"
    outputs.plot_returns(path, plain.metrics["env_steps"][0], returns, "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_title_names_the_update_rule(tmp_path, tiny, plain, monkeypatch):
    titles = []
    monkeypatch.setattr(outputs, "plot_returns", lambda *args: titles.append(args[-1]))
    for rule in ("ppo", "trpo"):
        experiment.write_outputs(tmp_path, tiny.replace(update_rule=rule), OPTIONS, None, plain)
    assert titles == ["CartPole-v1: PPO, 2 seeds", "CartPole-v1: TRPO, 2 seeds"]

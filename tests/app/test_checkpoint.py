"""Checkpoints round-trip exactly, refuse what they should, are written atomically; progress
reporting does not change results."""

from __future__ import annotations

import io
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from purejaxppo import checkpoint, experiment, outputs
from purejaxppo.config import PPOConfig
from purejaxppo.presets import RunOptions

TINY = PPOConfig(total_timesteps=2048, num_envs=4, num_steps=64)  # 8 updates
OPTIONS = RunOptions(seed=3, num_seeds=2)


def assert_trees_equal(a, b) -> None:
    """Bit-for-bit equality of two pytrees (typed keys compared by their key data)."""
    fa, fb = checkpoint.flatten_state(a), checkpoint.flatten_state(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        assert fa[name].dtype == fb[name].dtype, name
        np.testing.assert_array_equal(fa[name], fb[name], err_msg=name)


@pytest.fixture(scope="module")
def initial() -> experiment.Start:
    return experiment.start(TINY, OPTIONS)


@pytest.fixture(scope="module")
def metrics_like() -> dict[str, np.ndarray]:
    return {"episode_return": np.arange(6, dtype=np.float32).reshape(2, 3),
            "env_steps": np.array([[256, 512, 768]] * 2, np.int32)}


def test_round_trip_is_exact_and_keeps_typed_keys(initial, metrics_like):
    state = initial.state
    assert jax.dtypes.issubdtype(state.key.dtype, jax.dtypes.prng_key)
    data = checkpoint.to_bytes(state, metrics_like, update=3)
    restored, metrics, update = checkpoint.from_bytes(state, data)
    assert update == 3
    assert_trees_equal(restored, state)
    assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
    # The restored key draws the same numbers as the original.
    np.testing.assert_array_equal(jax.random.uniform(restored.key[0]),
                                  jax.random.uniform(state.key[0]))
    assert metrics.keys() == metrics_like.keys()
    for k in metrics:
        np.testing.assert_array_equal(metrics[k], metrics_like[k])
        assert metrics[k].dtype == metrics_like[k].dtype


def test_checkpoint_of_another_config_is_refused(initial, metrics_like):
    data = checkpoint.to_bytes(initial.state, metrics_like, update=3)
    wider = experiment.start(TINY.replace(hidden_sizes=(32, 32)), OPTIONS).state
    with pytest.raises(checkpoint.CheckpointError, match="another config"):
        checkpoint.from_bytes(wider, data)
    one_seed = jax.tree.map(lambda x: x[:1], initial.state)
    with pytest.raises(checkpoint.CheckpointError, match="another config"):
        checkpoint.from_bytes(one_seed, data)


@pytest.mark.parametrize("garble", [lambda b: b[: len(b) // 2], lambda b: b"not msgpack" + b,
                                    lambda b: b""])
def test_corrupt_checkpoint_is_refused(initial, metrics_like, garble):
    data = checkpoint.to_bytes(initial.state, metrics_like, update=3)
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        checkpoint.from_bytes(initial.state, garble(data))


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


def test_chunk_lengths():
    assert experiment.chunk_lengths(0, 8, 0) == [8]
    assert experiment.chunk_lengths(0, 8, 4) == [4, 4]
    assert experiment.chunk_lengths(0, 10, 4) == [4, 4, 2]
    assert experiment.chunk_lengths(4, 10, 4) == [4, 2]
    assert experiment.chunk_lengths(10, 10, 4) == []


@pytest.fixture(scope="module")
def plain(initial) -> experiment.Outcome:
    return experiment.train(TINY, OPTIONS, initial)


def test_progress_bar_does_not_change_results(initial, plain):
    stream = io.StringIO()
    shown = experiment.train(TINY, OPTIONS, initial, progress=stream)
    assert_trees_equal(shown.state, plain.state)
    assert plain.metrics.keys() == shown.metrics.keys()
    for k in plain.metrics:
        np.testing.assert_array_equal(shown.metrics[k], plain.metrics[k], err_msg=k)
    text = stream.getvalue()
    assert "8/8 updates" in text and "steps/s" in text and "return" in text


def test_outcome_shapes(plain):
    assert int(plain.state.update[0]) == TINY.num_updates == 8
    for k, v in plain.metrics.items():
        assert v.shape == (OPTIONS.num_seeds, TINY.num_updates), k
    np.testing.assert_array_equal(plain.metrics["env_steps"][0], 256 * np.arange(1, 9))
    # Two seeds are two different runs.
    assert not np.array_equal(plain.metrics["policy_loss"][0], plain.metrics["policy_loss"][1])


def test_final_return_is_the_mean_of_the_last_five_percent():
    returns = np.stack([np.arange(100.0), np.zeros(100)])
    np.testing.assert_allclose(outputs.final_returns(returns), [np.mean(np.arange(95, 100)), 0.0])
    assert outputs.final_window(8) == 1 and outputs.final_window(976) == 49


def test_metrics_csv_has_a_row_per_update_and_seed(plain):
    text = outputs.metrics_csv(plain.metrics, seeds=[3, 4])
    lines = text.splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["update", "seed", "env_steps"]
    assert set(header[3:]) == set(plain.metrics) - {"env_steps"}
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

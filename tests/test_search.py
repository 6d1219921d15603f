"""Hyperparameter search in one program: random search and population-based training."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import TINY

from purejaxppo import PPOConfig, make_train
from purejaxppo.search import (
    check_space,
    explore,
    random_search,
    sample_population,
    space_losses,
)

TINY = {**TINY, "total_timesteps": 1024}
SPACE = {"lr": ("log_uniform", 1e-5, 1e-2), "gae_lambda": ("uniform", 0.8, 1.0),
         "gamma": ("choice", [0.9, 0.99]), "policy_loss": ("choice", ["ppo_clip", "kl_penalty"])}


def in_space(space, hparams, loss_index):
    """Asserts every value of batched hyperparameters lies in the space."""
    for name, dist in check_space(PPOConfig(**TINY), space).items():
        if name == "policy_loss":
            assert set(np.asarray(loss_index).ravel()) <= set(range(len(dist.choices)))
            continue
        x = np.asarray(getattr(hparams, name))
        if dist.kind == "choice":
            assert set(x.ravel().tolist()) <= {float(np.float32(c)) for c in dist.choices}, name
        else:
            assert x.min() >= np.float32(dist.low) and x.max() <= np.float32(dist.high), name


# ---- the space -------------------------------------------------------------------------------


def test_draws_cover_the_space_and_stay_inside_it():
    config = PPOConfig(**TINY)
    space = check_space(config, SPACE)
    hparams, loss_index = sample_population(config, space, jax.random.key(0), 4000)
    in_space(SPACE, hparams, loss_index)
    lr = np.asarray(hparams.lr)
    # log-uniform: a decade per third of the range, not a uniform pile near the top.
    assert 0.28 < np.mean(lr < 1e-4) < 0.39 and 0.28 < np.mean(lr > 1e-3) < 0.39
    assert set(np.asarray(hparams.gamma).tolist()) == {np.float32(0.9), np.float32(0.99)}
    assert set(loss_index.tolist()) == {0, 1}
    # Fields outside the space keep the config's value.
    assert set(np.asarray(hparams.clip_eps).tolist()) == {np.float32(config.clip_eps)}
    again, _ = sample_population(config, space, jax.random.key(0), 4000)
    np.testing.assert_array_equal(again.lr, hparams.lr)
    other, _ = sample_population(config, space, jax.random.key(1), 4000)
    assert not np.array_equal(other.lr, hparams.lr)


def test_explore_keeps_every_hyperparameter_inside_the_space():
    config = PPOConfig(**TINY)
    space = check_space(config, SPACE)
    hparams, loss_index = sample_population(config, space, jax.random.key(0), 2000)
    step = jax.jit(jax.vmap(lambda h, i, k: explore(space, h, i, k, 0.2, (0.8, 1.25))))
    start = hparams
    for t in range(30):  # repeated perturbation drives values into the clips
        hparams, loss_index = step(hparams, loss_index, jax.random.split(jax.random.key(t), 2000))
        in_space(SPACE, hparams, loss_index)
    lr0, lr1 = np.asarray(start.lr), np.asarray(hparams.lr)
    assert np.asarray(hparams.lr).min() == np.float32(1e-5)  # the clip is reached and respected
    # One step: a perturbed value is x0.8 or x1.25 of its start unless resampled (~20%).
    one, _ = step(start, loss_index, jax.random.split(jax.random.key(99), 2000))
    ratio = np.asarray(one.lr) / lr0
    moved = np.isclose(ratio, 0.8, rtol=1e-6) | np.isclose(ratio, 1.25, rtol=1e-6) | (
        np.asarray(one.lr) == np.float32(1e-5)) | (np.asarray(one.lr) == np.float32(1e-2))
    assert 0.7 < moved.mean() < 0.9
    assert not np.array_equal(lr0, lr1)


@pytest.mark.parametrize("space,words", [
    ({"num_envs": ("choice", [4, 8])}, ["'num_envs'", "searchable", "lr"]),
    ({"lr": ("normal", 0.0, 1.0)}, ["'lr'", "'normal'", "log_uniform"]),
    ({"lr": ("log_uniform", 0.0, 1e-3)}, ["'lr'", "lo must be > 0"]),
    ({"lr": ("uniform", 1e-3, 1e-4)}, ["'lr'", "lo < hi"]),
    ({"gamma": ("uniform", 0.9, 1.5)}, ["gamma", "1.5", "(0, 1]"]),
    ({"policy_loss": ("choice", ["ppo_clip", "nope"])}, ["policy_loss", "nope"]),
    ({"policy_loss": ("uniform", 0, 1)}, ["policy_loss", "choice"]),
    ({"gamma": ("choice", [])}, ["'gamma'", "at least one value"]),
    ({"lr": "1e-3"}, ["'lr'", "log_uniform"]),
    ({}, ["non-empty"]),
])
def test_bad_space_gives_one_clear_line(space, words):
    with pytest.raises(ValueError) as err:
        check_space(PPOConfig(**TINY), space)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


# ---- random search ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def searched():
    config = PPOConfig(**TINY)
    space = {"lr": ("log_uniform", 1e-5, 1e-2), "policy_loss": ("choice", ["ppo_clip",
                                                                            "kl_penalty"])}
    return config, random_search(config, space, num_samples=3, seeds=2, key=jax.random.key(1))


def test_random_search_ranks_samples_by_mean_final_return(searched):
    config, found = searched
    returns = found.final_returns()
    assert returns.shape == (3, 2)
    for leaf in jax.tree.leaves(found.result.metrics):
        assert leaf.shape == (3, 2, config.num_updates)
    means = np.nanmean(returns, axis=1)
    order = found.ranking()
    assert sorted(order) == [0, 1, 2]
    assert list(means[order]) == sorted(means, reverse=True)
    rows = found.table()
    assert [r["sample"] for r in rows] == order and [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["final_return"] == pytest.approx(means[order[0]])
    assert rows[0].keys() >= {"lr", "policy_loss", "final_return", "std", "min", "max"}
    for row in rows:
        assert 1e-5 <= row["lr"] <= 1e-2 and row["policy_loss"] in ("ppo_clip", "kl_penalty")
    text = found.markdown()
    assert text.count("\n| ") == 3 and "final return" in text
    assert len({s["lr"] for s in found.samples}) == 3


def test_best_config_reproduces_the_best_sample(searched):
    config, found = searched
    best = found.best_config()
    sample = found.samples[found.ranking()[0]]
    assert best.lr == sample["lr"] and best.policy_loss == sample["policy_loss"]
    assert best.replace(lr=config.lr, policy_loss=config.policy_loss) == config
    single = jax.jit(make_train(best))(jax.random.key(1))  # seed 1 of the search
    runs = jax.tree.map(lambda x: x[found.ranking()[0], 1], found.result)
    for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(runs.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(single.metrics["episode_return"], runs.metrics["episode_return"],
                               rtol=1e-5)


def test_same_key_same_samples_other_key_other_samples():
    config = PPOConfig(**TINY)
    space = check_space(config, {"lr": ("log_uniform", 1e-5, 1e-2), "policy_loss": (
        "choice", ["ppo_clip", "kl_penalty"])})
    assert space_losses(space) == ("ppo_clip", "kl_penalty")
    a = sample_population(config, space, jax.random.key(1), 3)
    b = sample_population(config, space, jax.random.key(1), 3)
    c = sample_population(config, space, jax.random.key(2), 3)
    np.testing.assert_array_equal(a[0].lr, b[0].lr)
    assert not np.array_equal(a[0].lr, c[0].lr)

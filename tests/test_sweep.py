"""Sweeps in one program: every grid point and every hyperparameter equals its single run."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import TINY

from purejaxppo import POLICY_LOSSES, Hyperparams, PPOConfig, make_train, sweep
from purejaxppo.metrics import final_window
from purejaxppo.parallel import compiler_options
from purejaxppo.sweeps import SWEEPABLE, choose_mesh, train_runs

TINY = {**TINY, "total_timesteps": 1024}
LRS = [2.5e-4, 1e-3]
LOSSES = list(POLICY_LOSSES)


def assert_runs_close(single, batched):
    # A sweep over losses reports kl_beta for every run; a single run only for kl_penalty.
    assert set(single.metrics) <= set(batched.metrics)
    metrics = {k: batched.metrics[k] for k in single.metrics}
    for a, b in zip(jax.tree.leaves((single.params, single.metrics)),
                    jax.tree.leaves((batched.params, metrics)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def run_at(result, *index):
    return jax.tree.map(lambda x: x[index], result)


@pytest.fixture(scope="module")
def loss_sweep():
    """Every policy loss x 2 learning rates x 2 seeds: 24 runs, one jitted call."""
    config = PPOConfig(**TINY)
    return config, sweep(config, seeds=2, grid={"lr": LRS, "policy_loss": LOSSES})


@pytest.mark.parametrize("lr,loss,seed", [(1e-3, "kl_penalty", 1), (2.5e-4, "ppo_clip", 0)])
def test_each_sweep_point_equals_its_single_run(loss_sweep, lr, loss, seed):
    config, result = loss_sweep
    # The single run fixes everything statically: its loss and its learning rate are the config's.
    # It compiles with the sweep's options: the suite's default -O0 rounds further apart.
    single = jax.jit(make_train(config.replace(lr=lr, policy_loss=loss)),
                     compiler_options=compiler_options())(jax.random.key(seed))
    assert_runs_close(single, run_at(result.result, LRS.index(lr), LOSSES.index(loss), seed))


def test_sweep_axes_table_and_markdown(loss_sweep):
    config, result = loss_sweep
    assert result.axes == ("lr", "policy_loss", "seed")
    assert result.values == {"lr": LRS, "policy_loss": LOSSES, "seed": [0, 1]}
    n = config.num_updates
    for value in result.result.metrics.values():
        assert value.shape == (2, len(LOSSES), 2, n)
    rows = result.table()
    assert len(rows) == 2 * len(LOSSES) * 2
    assert rows[0].keys() == {"lr", "policy_loss", "seed", "final_return"}
    returns = np.asarray(result.result.metrics["episode_return"])
    last = final_window(n)
    for row in rows:
        index = (LRS.index(row["lr"]), LOSSES.index(row["policy_loss"]), row["seed"])
        assert row["final_return"] == pytest.approx(float(returns[index][-last:].mean()))
    text = result.markdown()
    assert text.count("\n| ") == 2 * len(LOSSES)  # one row per grid point, after the header
    assert "kl_penalty" in text and "final return" in text


def test_kl_beta_adapts_only_where_the_index_selects_kl_penalty(loss_sweep):
    _, result = loss_sweep
    beta = np.asarray(result.result.metrics["kl_beta"])
    for j, loss in enumerate(LOSSES):
        if loss == "kl_penalty":
            assert len(set(beta[:, j].ravel().tolist())) > 1
            assert set(np.round(beta[:, j, :, 1:] / beta[:, j, :, :-1], 6).ravel()) <= {0.5, 1, 2}
        else:
            assert set(beta[:, j].ravel().tolist()) == {1.0}, loss


# A value of each field that changes training (kl_* matter only to kl_penalty, used below).
CHANGED = dict(lr=1e-3, clip_eps=0.05, ent_coef=0.2, vf_coef=2.0, gamma=0.9, gae_lambda=0.5,
               max_grad_norm=0.01, kl_target=0.1, kl_beta_init=4.0)


def test_every_hyperparameter_is_traced_and_vmaps():
    """Row 0 is the default; row i changes one field. vmap over rows == one traced run per row."""
    config = PPOConfig(policy_loss="kl_penalty", **TINY)
    default = config.hyperparams()
    rows = [default]
    for field in Hyperparams._fields:
        # A field another part of the package may add: change it, without asserting an effect.
        value = CHANGED.get(field, 0.5 * float(getattr(config, field)))
        rows.append(config.replace(**{field: value}).hyperparams())
    hparams = jax.tree.map(lambda *xs: np.stack(xs), *rows)
    train = make_train(config)
    key = jax.random.key(3)
    batched = jax.jit(jax.vmap(train, in_axes=(None, 0)))(key, hparams)
    single_train = jax.jit(train)
    for i, (field, hp) in enumerate(zip(("default", *Hyperparams._fields), rows, strict=True)):
        single = single_train(key, hp)
        assert_runs_close(single, run_at(batched, i))
        if field in CHANGED:
            differs = [not np.allclose(a, b[0]) for a, b in zip(
                jax.tree.leaves((single.params, single.metrics)),
                jax.tree.leaves((batched.params, batched.metrics)), strict=True)]
            assert any(differs), f"{field} has no effect on training"
    lr = np.asarray(batched.metrics["learning_rate"][1 + Hyperparams._fields.index("lr")])
    n = config.num_updates
    np.testing.assert_allclose(lr, CHANGED["lr"] * (1 - np.arange(n) / n), rtol=1e-6)


@pytest.mark.parametrize("grid,words", [
    ({"num_envs": [4, 8]}, ["'num_envs'", "num_steps", "one sweep per value"]),
    ({"learning_rate": [1e-3]}, ["'learning_rate'", "lr", "clip_eps"]),
    ({"lr": [-1.0]}, ["lr", "-1.0"]),
    ({"policy_loss": ["ppo_clip", "nope"]}, ["policy_loss", "nope"]),
    ({"gamma": []}, ["gamma", "empty"]),
    ({"gamma": 0.9}, ["gamma", "list"]),
])
def test_bad_grid_gives_clear_error(grid, words):
    with pytest.raises(ValueError) as err:
        sweep(PPOConfig(**TINY), seeds=2, grid=grid)
    for word in words:
        assert word in str(err.value)


def test_sweepable_keys_follow_hyperparams():
    assert set(SWEEPABLE) == {*Hyperparams._fields, "policy_loss"}


def test_bad_seeds_and_losses_give_clear_errors():
    with pytest.raises(ValueError, match="seeds"):
        sweep(PPOConfig(**TINY), seeds=0)
    with pytest.raises(ValueError, match="unknown policy loss 'nope'"):
        make_train(PPOConfig(**TINY), policy_losses=("ppo_clip", "nope"))
    train = make_train(PPOConfig(**TINY), policy_losses=("kl_penalty",))
    with pytest.raises(ValueError, match="loss_index is required"):
        jax.eval_shape(train, jax.random.key(0))
    assert choose_mesh(3, None) is None  # one device here: nothing to split
    for bad in (True, 2.5, "2", None):
        with pytest.raises(ValueError, match=r"seeds=.* is invalid: give a positive number"):
            sweep(PPOConfig(**TINY), seeds=bad)


def test_train_runs_refuses_keys_and_hyperparameters_that_do_not_fit():
    """Named one-line errors before anything is traced: a single key, hyperparameters of
    another batch or type, and values outside PPOConfig's ranges (before: an IndexError, raw
    broadcasting errors, or a run with a negative learning rate)."""
    config = PPOConfig(**TINY)
    keys = jax.random.split(jax.random.key(0), 2)
    hp = jax.tree.map(lambda x: np.repeat(x, 2), config.hyperparams())
    cases = [
        (jax.random.key(0), hp, r"keys must be one key per run, \[B\]; got key shape \(\)"),
        (keys, {"lr": np.ones(2)}, "hparams must be a purejaxppo.Hyperparams"),
        (keys, hp._replace(lr=np.ones(3)), r"hparams.lr has shape \[3\]: it must be \[2\]"),
        (keys, hp._replace(lr=np.array([3e-4, -1.0])), r"PPOConfig.lr=-1.0 is invalid"),
        (keys, hp._replace(gamma=np.array([2.0, 0.99])), r"PPOConfig.gamma=2.0 is invalid"),
    ]
    for k, h, words in cases:
        with pytest.raises(ValueError, match=words):
            train_runs(config, k, h)


def test_a_grid_of_jax_arrays_sweeps_as_a_list_does():
    config = PPOConfig(**{**TINY, "total_timesteps": 256})
    as_list = sweep(config, seeds=1, grid={"lr": [1e-3, 2e-3]})
    as_jax = sweep(config, seeds=1, grid={"lr": jax.numpy.array([1e-3, 2e-3])})
    np.testing.assert_allclose(as_jax.values["lr"], as_list.values["lr"], rtol=1e-7)
    runs = [(r.result.params, r.result.metrics) for r in (as_list, as_jax)]
    for a, b in zip(*map(jax.tree.leaves, runs), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"grid\['lr'\] must be a list of values"):
        sweep(config, seeds=1, grid={"lr": jax.numpy.ones((2, 2))})

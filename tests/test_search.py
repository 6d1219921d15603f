"""Hyperparameter search in one program: random search and population-based training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY

from purejaxppo import PPOConfig, make_init, make_run, make_train
from purejaxppo.parallel import compiler_options
from purejaxppo.search import (
    check_space,
    exploit_and_explore,
    explore,
    pbt,
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


# ---- population-based training ---------------------------------------------------------------

PBT_SPACE = {"lr": ("log_uniform", 1e-4, 1e-2), "ent_coef": ("uniform", 0.0, 0.05),
             "policy_loss": ("choice", ["ppo_clip", "kl_penalty"])}
PBT_ARGS = dict(population=8, ready_every=2, key=jax.random.key(5))


def leaves_equal(a, b):
    """Bit-for-bit equality of two pytrees (typed keys compared by their data)."""
    def data(x):
        return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(data(x)), np.asarray(data(y)))


def test_exploit_copies_exactly_the_chosen_members_learning_state_and_nothing_else():
    # Normalisation and kl_penalty on: the statistics and kl_beta differ between members.
    config = PPOConfig(**TINY, normalize_obs=True, normalize_reward=True, policy_loss="kl_penalty")
    space = check_space(config, PBT_SPACE)
    hparams, loss_index = sample_population(config, space, jax.random.key(0), 8)
    hparams = hparams._replace(kl_beta_init=np.linspace(0.5, 4.0, 8, dtype=np.float32))
    keys = jax.random.split(jax.random.key(1), 8)
    init, run = make_init(config), make_run(config)
    state = jax.jit(jax.vmap(lambda k, h: run(init(k, h), h, 1)[0]))(keys, hparams)
    assert len(set(np.asarray(state.opt_state.kl_beta).tolist())) > 1
    score = jnp.asarray([1.0, jnp.nan, 3.0, 0.0, 5.0, 2.0, 4.0, -1.0])
    step = jax.jit(lambda s, h, i, sc, k: exploit_and_explore(space, s, h, i, sc, k, 0.25, 0.2,
                                                              (0.8, 1.25)))
    new, new_hp, new_li, parent = step(state, hparams, loss_index, score, jax.random.key(2))
    parent = np.asarray(parent)
    # Bottom 2 (NaN ranks lowest, then -1) copy from the top 2 (5 and 4); the rest keep their own.
    assert parent[1] in (4, 6) and parent[7] in (4, 6)
    assert [parent[i] for i in (0, 2, 3, 4, 5, 6)] == [0, 2, 3, 4, 5, 6]

    def at(tree, i):
        return jax.tree.map(lambda x: x[i], tree)

    for i in range(8):
        p = parent[i]
        leaves_equal(at((new.params, new.opt_state, new.env_carry.normalizer.obs,
                         new.env_carry.normalizer.ret, new.first_nonfinite), i),
                     at((state.params, state.opt_state, state.env_carry.normalizer.obs,
                         state.env_carry.normalizer.ret, state.first_nonfinite), p))
        # Its environments keep running and its random stream stays its own.
        leaves_equal(at((new.env_carry.env_state, new.env_carry.obs, new.env_carry.episode,
                         new.env_carry.normalizer.discounted_return, new.key, new.last_return,
                         new.updates_done), i),
                     at((state.env_carry.env_state, state.env_carry.obs, state.env_carry.episode,
                         state.env_carry.normalizer.discounted_return, state.key,
                         state.last_return, state.updates_done), i))
    key_data = np.asarray(jax.random.key_data(new.key))
    assert len({tuple(k) for k in key_data}) == 8
    # The copied params really differ from the ones replaced (the test can fail).
    assert not np.array_equal(jax.tree.leaves(new.params)[-1][1],
                              jax.tree.leaves(state.params)[-1][1])
    # Explore: copied members perturb their parent's values; the others keep theirs.
    in_space(PBT_SPACE, new_hp, new_li)
    for i in range(8):
        lr, parent_lr = float(new_hp.lr[i]), float(hparams.lr[parent[i]])
        if parent[i] == i:
            assert lr == float(hparams.lr[i]) and int(new_li[i]) == int(loss_index[i])
        else:
            assert lr != parent_lr


@pytest.fixture(scope="module")
def population():
    return pbt(PPOConfig(**TINY), PBT_SPACE, **PBT_ARGS)


def test_pbt_records_schedule_lineage_and_exploits_by_rank(population):
    config = PPOConfig(**TINY)
    n, p = config.num_updates, 8
    assert population.starts == [0, 2]
    for value in population.result.metrics.values():
        assert value.shape == (p, n)
    np.testing.assert_array_equal(population.result.metrics["env_steps"][0],
                                  np.arange(1, n + 1) * config.batch_size)
    assert population.hparams.lr.shape == (2, p) and population.parents.shape == (1, p)
    in_space(PBT_SPACE, population.hparams, population.loss_index)
    parents, scores = population.parents[0], population.scores[0]
    np.testing.assert_allclose(scores, np.nanmean(
        population.result.metrics["episode_return"][:, :2], axis=1), rtol=1e-6)
    order = np.argsort(np.where(np.isnan(scores), -np.inf, scores), kind="stable")
    copied = np.flatnonzero(parents != np.arange(p))
    assert sorted(copied) == sorted(order[:2]) and set(parents[copied]) <= set(order[-2:])
    for i in range(p):
        source = parents[i]
        before, after = population.hparams.lr[0, source], population.hparams.lr[1, i]
        if source == i:
            assert after == before
        else:  # perturbed by x0.8 / x1.25 (clipped), or resampled
            assert 1e-4 <= after <= 1e-2 and after != before
    # The winner, its parameters and the schedule along its lineage.
    best = population.best()
    returns = population.final_returns()
    assert best.member == int(np.nanargmax(returns)) and best.final_return == returns[best.member]
    leaves_equal(best.params, jax.tree.map(lambda x: x[best.member],
                                           population.result.state.params))
    lineage = population.lineage(best.member)
    assert lineage == [int(parents[best.member]), best.member]
    assert [row["member"] for row in best.schedule] == lineage
    assert best.schedule[0]["lr"] == float(population.hparams.lr[0, lineage[0]])
    rows = population.table()
    assert len(rows) == 2 * p and rows[0].keys() >= {"interval", "member", "lr", "policy_loss",
                                                      "score", "parent"}
    assert population.markdown().count("\n| ") == p


def test_pbt_population_of_one_is_a_plain_run():
    # Evaluations every 2 updates across intervals of 3: the second interval's evaluation falls
    # on the run's update 4, not on its own second update.
    config = PPOConfig(**TINY, eval_every=2, eval_episodes=2)
    one = pbt(config, {"lr": ("log_uniform", 1e-4, 1e-2)}, population=1, ready_every=3,
              key=jax.random.key(3))
    assert one.starts == [0, 3] and one.parents.tolist() == [[0]]
    hp = jax.tree.map(lambda x: x[0, 0], one.hparams)
    assert float(one.hparams.lr[1, 0]) == float(hp.lr)
    train = make_train(config)
    # With the population's compiler options: the suite's default -O0 rounds further apart.
    plain = jax.jit(train, compiler_options=compiler_options())(one.member_keys[0], hp)
    run = jax.tree.map(lambda x: x[0], (one.result.state.params, one.result.metrics))
    evaluated = ~np.isnan(np.asarray(plain.metrics["eval_return"]))
    assert evaluated.tolist() == [False, True, False, True]
    np.testing.assert_array_equal(~np.isnan(run[1]["eval_return"]), evaluated)
    # Equal to float32 rounding (1 ulp here): the population program batches and chunks the
    # same arithmetic, which XLA may fuse and order differently.
    for a, b in zip(jax.tree.leaves((plain.params, plain.metrics)), jax.tree.leaves(run),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_pbt_same_key_same_lineage_on_any_number_of_devices(population):
    """The fixture ran on this process's one device; the same key on 4 devices, in another
    process, gives the same lineage and schedule, and returns equal to float32 rounding."""
    from test_sharding import run_script

    out = run_script(f"""
        import json
        from purejaxppo.search import pbt
        four = pbt(PPOConfig(**{TINY!r}), {PBT_SPACE!r}, population=8, ready_every=2,
                   key=jax.random.key(5))
        assert len(jax.tree.leaves(four.result.state.params)[0].sharding.device_set) == 4
        print("RESULT", json.dumps({{"parents": four.parents.tolist(),
                                    "lr": np.asarray(four.hparams.lr).tolist(),
                                    "loss": np.asarray(four.loss_index).tolist(),
                                    "scores": np.asarray(four.scores).tolist(),
                                    "returns": four.final_returns().tolist()}}))
    """)
    import json

    assert jax.device_count() == 1
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    there = json.loads(line.split(" ", 1)[1])
    assert there["parents"] == population.parents.tolist()
    assert there["lr"] == np.asarray(population.hparams.lr).tolist()
    assert there["loss"] == np.asarray(population.loss_index).tolist()
    np.testing.assert_allclose(there["scores"], population.scores, rtol=1e-5)
    np.testing.assert_allclose(there["returns"], population.final_returns(), rtol=1e-5)


def test_bad_pbt_arguments_give_clear_errors():
    config = PPOConfig(**TINY)
    for kwargs, words in [(dict(population=0, ready_every=1), "population=0"),
                          (dict(population=4, ready_every=5), "ready_every=5"),
                          (dict(population=4, ready_every=1, fraction=0.6), "fraction=0.6"),
                          (dict(population=4, ready_every=1, resample_prob=2.0), "resample_prob"),
                          (dict(population=4, ready_every=1, resample_prob=True), "resample_prob"),
                          (dict(population=4, ready_every=1, perturb=(True, 1.25)), "perturb"),
                          (dict(population=4, ready_every=1, perturb=(0.8, float("inf"))),
                           "perturb"),
                          (dict(population=4, ready_every=1, perturb=(0.8, float("nan"))),
                           "perturb"),
                          (dict(population=4, ready_every=1, perturb=(1e-50, 1.25)), "perturb"),
                          (dict(population=4, ready_every=1, perturb=1.25), "perturb"),
                          (dict(population=4, ready_every=1, perturb=(0.8,)), "perturb")]:
        with pytest.raises(ValueError, match=words):
            pbt(config, PBT_SPACE, **kwargs)

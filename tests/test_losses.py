"""The policy-loss library: gradient identities, the stop_gradient pitfall, clipping, finiteness."""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from purejaxppo import losses
from purejaxppo.losses import (
    POLICY_LOSSES,
    approx_kl,
    clip_fraction,
    clipped_value_loss,
    get_policy_loss,
    importance_log_loss,
    importance_ratio,
    importance_ratio_loss,
    policy_gradient_loss,
    ppo_clip_log_loss,
    ppo_clip_loss,
    value_loss,
)

SURROGATES = ("ppo_clip", "ppo_clip_log", "importance_ratio", "importance_log", "policy_gradient")
RTOL, ATOL = 1e-5, 1e-6


def linear_policy_batch(seed: int, batch: int = 256, obs_dim: int = 6, num_actions: int = 4):
    """A real parameterised policy: logits = obs @ W + b over random observations."""
    k_obs, k_w, k_act, k_adv = jax.random.split(jax.random.key(seed), 4)
    obs = jax.random.normal(k_obs, (batch, obs_dim))
    theta_old = {
        "w": 0.5 * jax.random.normal(k_w, (obs_dim, num_actions)),
        "b": jnp.zeros(num_actions),
    }
    logits_old = obs @ theta_old["w"] + theta_old["b"]
    actions = jax.random.categorical(k_act, logits_old)
    advantages = jax.random.normal(k_adv, (batch,))

    def log_prob_fn(theta):
        logits = obs @ theta["w"] + theta["b"]
        return jnp.take_along_axis(jax.nn.log_softmax(logits), actions[:, None], axis=-1)[:, 0]

    old_log_prob = log_prob_fn(theta_old)
    return theta_old, log_prob_fn, old_log_prob, advantages


def policy_grad(name: str, theta, log_prob_fn, old_log_prob, advantages):
    loss = get_policy_loss(name)
    return jax.grad(lambda t: loss(log_prob_fn(t), old_log_prob, advantages))(theta)


def assert_trees_close(a, b, rtol=RTOL, atol=ATOL):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def tree_distance(a, b) -> float:
    diffs = jax.tree.map(lambda x, y: jnp.sum((x - y) ** 2), a, b)
    return float(jnp.sqrt(sum(jax.tree.leaves(diffs))))


def moved_theta(theta_old, log_prob_fn, old_log_prob, advantages, steps: int = 5, lr: float = 0.5):
    """theta after a few gradient steps on the clipped surrogate: theta != theta_old."""
    theta = theta_old
    for _ in range(steps):
        g = policy_grad("ppo_clip", theta, log_prob_fn, old_log_prob, advantages)
        theta = jax.tree.map(lambda p, gp: p - lr * gp, theta, g)
    return theta


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_surrogates_agree_at_theta_old(seed):
    theta_old, log_prob_fn, old_log_prob, adv = linear_policy_batch(seed)
    grads = {n: policy_grad(n, theta_old, log_prob_fn, old_log_prob, adv) for n in SURROGATES}
    reference = grads["policy_gradient"]
    assert tree_distance(reference, jax.tree.map(jnp.zeros_like, reference)) > 1e-3
    for name in SURROGATES:
        assert_trees_close(grads[name], reference)


@pytest.mark.parametrize("seed", [0, 3])
def test_forms_agree_away_from_theta_old_and_policy_gradient_differs(seed):
    theta_old, log_prob_fn, old_log_prob, adv = linear_policy_batch(seed)
    theta = moved_theta(theta_old, log_prob_fn, old_log_prob, adv)
    ratio = jnp.exp(log_prob_fn(theta) - old_log_prob)
    # The policy really moved, and some samples are outside the clip range.
    assert float(jnp.max(jnp.abs(ratio - 1.0))) > 0.2
    g = {n: policy_grad(n, theta, log_prob_fn, old_log_prob, adv) for n in SURROGATES}
    assert_trees_close(g["importance_ratio"], g["importance_log"])
    assert_trees_close(g["ppo_clip"], g["ppo_clip_log"])
    scale = tree_distance(g["importance_ratio"], jax.tree.map(jnp.zeros_like, g["importance_ratio"]))
    assert tree_distance(g["policy_gradient"], g["importance_ratio"]) > 1e-2 * scale
    assert tree_distance(g["ppo_clip"], g["importance_ratio"]) > 1e-2 * scale


def test_log_form_without_stop_gradient_is_wrong():
    theta_old, log_prob_fn, old_log_prob, adv = linear_policy_batch(4)
    theta = moved_theta(theta_old, log_prob_fn, old_log_prob, adv)

    def pitfall(t):
        lp = log_prob_fn(t)
        return -jnp.mean(jnp.exp(lp - old_log_prob) * lp * adv)  # ratio NOT stop_gradient-ed

    right = policy_grad("importance_ratio", theta, log_prob_fn, old_log_prob, adv)
    wrong = jax.grad(pitfall)(theta)
    assert tree_distance(right, wrong) > 0.1 * tree_distance(right, jax.tree.map(jnp.zeros_like, right))
    # Even at theta_old the extra term grad(r) log pi A is there.
    right0 = policy_grad("importance_ratio", theta_old, log_prob_fn, old_log_prob, adv)
    assert tree_distance(right0, jax.grad(pitfall)(theta_old)) > 1e-3


@pytest.mark.parametrize("clip_eps", [0.1, 0.2, 0.3])
def test_ppo_clip_gradient_vanishes_exactly_where_clipping_binds(clip_eps):
    key_lp, key_adv = jax.random.split(jax.random.key(7))
    n = 400
    old_log_prob = jnp.full((n,), -1.0)
    log_prob = old_log_prob + jax.random.uniform(key_lp, (n,), minval=-0.7, maxval=0.7)
    adv = jax.random.normal(key_adv, (n,))
    grad = jax.grad(ppo_clip_loss)(log_prob, old_log_prob, adv, clip_eps)
    grad_log = jax.grad(ppo_clip_log_loss)(log_prob, old_log_prob, adv, clip_eps)
    ratio = jnp.exp(log_prob - old_log_prob)
    binds = ((ratio > 1 + clip_eps) & (adv > 0)) | ((ratio < 1 - clip_eps) & (adv < 0))
    assert 20 < int(binds.sum()) < n - 20
    assert bool(jnp.all(grad[binds] == 0.0))
    assert bool(jnp.all(grad[~binds] != 0.0))
    # Where it flows, the per-sample gradient is -r A / n.
    np.testing.assert_allclose(grad[~binds], (-ratio * adv / n)[~binds], rtol=1e-5)
    np.testing.assert_allclose(grad_log, grad, rtol=1e-5, atol=1e-9)


def test_worked_example_from_the_blog_post():
    """Categorical parameterised by unnormalised probabilities; action 0, advantage 1."""
    target = jnp.array([1.0, 1.0, 1.0, 1.0])
    behaviour = jnp.array([2.3, 1.0, 1.0, 1.0])
    action, adv = 0, jnp.ones(1)

    def log_prob(p):
        return jnp.log(p / p.sum())[action][None]

    old = log_prob(behaviour)
    ratio_form = jax.grad(lambda p: importance_ratio_loss(log_prob(p), old, adv))(target)
    log_form = jax.grad(lambda p: importance_log_loss(log_prob(p), old, adv))(target)

    def pitfall(p):
        return -jnp.mean(jnp.exp(log_prob(p) - old) * log_prob(p) * adv)

    expected = np.array([-0.4321, 0.1440, 0.1440, 0.1440])
    np.testing.assert_allclose(ratio_form, expected, atol=1e-4)
    np.testing.assert_allclose(log_form, expected, atol=1e-4)
    np.testing.assert_allclose(jax.grad(pitfall)(target), [0.1669, -0.0556, -0.0556, -0.0556], atol=1e-4)


def test_registry_and_lookup():
    assert set(POLICY_LOSSES) == {
        "ppo_clip", "ppo_clip_log", "importance_ratio", "importance_log", "policy_gradient",
        "kl_penalty",
    }
    assert get_policy_loss("ppo_clip") is ppo_clip_loss
    with pytest.raises(ValueError, match="ppo_clip_log.*kl_penalty"):
        get_policy_loss("ppo")


def test_shapes_are_checked():
    """Per-sample arrays must match: [4] against [4, 1] would broadcast to [4, 4] silently."""
    with pytest.raises(ValueError, match=r"log_prob \[3\], old_log_prob \[4\], advantages \[3\]: "
                                         "these must have the same shape"):
        ppo_clip_loss(jnp.zeros(3), jnp.zeros(4), jnp.zeros(3))
    column = jnp.zeros((4, 1))
    for call in (lambda: approx_kl(jnp.zeros(4), column),
                 lambda: clip_fraction(jnp.zeros(4), column),
                 lambda: importance_ratio(jnp.zeros(4), column),
                 lambda: value_loss(jnp.zeros(4), column),
                 lambda: clipped_value_loss(jnp.zeros(4), jnp.zeros(4), column)):
        with pytest.raises(ValueError, match=r"\[4, 1\]: these must have the same shape"):
            call()


def test_values_match_their_formulas():
    rng = np.random.default_rng(0)
    lp, old = rng.normal(size=(2, 8, 3)) * 0.3 - 1.0
    adv = rng.normal(size=(8, 3))
    r = np.exp(lp - old)
    eps, beta = 0.2, 0.7
    cases = {
        "ppo_clip": -np.mean(np.minimum(r * adv, np.clip(r, 1 - eps, 1 + eps) * adv)),
        "importance_ratio": -np.mean(r * adv),
        "importance_log": -np.mean(r * lp * adv),
        "policy_gradient": -np.mean(lp * adv),
        "kl_penalty": -(np.mean(r * adv) - beta * np.mean((r - 1) - np.log(r))),
    }
    kwargs = {"ppo_clip": {"clip_eps": eps}, "kl_penalty": {"beta": beta}}
    for name, want in cases.items():
        got = POLICY_LOSSES[name](jnp.asarray(lp), jnp.asarray(old), jnp.asarray(adv), **kwargs.get(name, {}))
        np.testing.assert_allclose(float(got), want, rtol=1e-5)
    k1, k3 = losses.approx_kl(jnp.asarray(lp), jnp.asarray(old))
    np.testing.assert_allclose([k1, k3], [np.mean(old - lp), np.mean(r - 1 - np.log(r))], rtol=1e-5)
    frac = losses.clip_fraction(jnp.asarray(lp), jnp.asarray(old), eps)
    np.testing.assert_allclose(float(frac), np.mean(np.abs(r - 1) > eps))


def test_kl_penalty_gradient_is_surrogate_minus_beta_kl():
    theta_old, log_prob_fn, old_log_prob, adv = linear_policy_batch(5)
    theta = moved_theta(theta_old, log_prob_fn, old_log_prob, adv, steps=2)
    beta = 0.5

    def by_hand(t):
        lr = log_prob_fn(t) - old_log_prob
        return -(jnp.mean(jnp.exp(lr) * adv) - beta * jnp.mean(jnp.expm1(lr) - lr))

    got = jax.grad(lambda t: losses.kl_penalty_loss(log_prob_fn(t), old_log_prob, adv, beta))(theta)
    assert_trees_close(got, jax.grad(by_hand)(theta))
    # At theta_old the KL term has zero gradient: kl_penalty equals the plain surrogate there.
    g0 = jax.grad(lambda t: losses.kl_penalty_loss(log_prob_fn(t), old_log_prob, adv, beta))(theta_old)
    assert_trees_close(g0, policy_grad("importance_ratio", theta_old, log_prob_fn, old_log_prob, adv))


def test_no_gradient_leaks_into_old_log_prob_or_advantages():
    lp, old, adv = jnp.array([-1.0, -0.5]), jnp.array([-0.9, -0.7]), jnp.array([1.0, -2.0])
    for name, loss in POLICY_LOSSES.items():
        g_old, g_adv = jax.grad(lambda o, a, fn=loss: fn(lp, o, a), argnums=(0, 1))(old, adv)
        assert bool(jnp.all(g_old == 0)) and bool(jnp.all(g_adv == 0)), name


def test_value_losses_and_entropy():
    v, old_v, t = jnp.array([1.0, 2.0, 0.0]), jnp.array([0.5, 2.5, 0.0]), jnp.array([2.0, 0.0, 1.0])
    np.testing.assert_allclose(losses.value_loss(v, t), 0.5 * np.mean([1.0, 4.0, 1.0]))
    clipped = np.array([0.7, 2.3, 0.0])
    want = 0.5 * np.mean(np.maximum((np.asarray(v) - t) ** 2, (clipped - t) ** 2))
    np.testing.assert_allclose(losses.clipped_value_loss(v, old_v, t, 0.2), want, rtol=1e-6)
    np.testing.assert_allclose(losses.categorical_entropy(jnp.zeros(4)), np.log(4.0), rtol=1e-6)
    np.testing.assert_allclose(
        losses.gaussian_entropy(jnp.zeros(2)), 2 * 0.5 * np.log(2 * np.pi * np.e), rtol=1e-6
    )
    np.testing.assert_allclose(losses.entropy_loss(jnp.array([1.0, 3.0])), -2.0)


finite_floats = st.floats(-1e3, 0.0, allow_nan=False, width=32)
big_advantages = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=15, deadline=None)
@given(
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
    data=st.data(),
    clip_eps=st.floats(0.01, 0.9),
    beta=st.floats(0.0, 100.0),
)
def test_every_loss_is_finite_for_extreme_inputs(shape, data, clip_eps, beta):
    lp = data.draw(hnp.arrays(np.float32, shape, elements=finite_floats))
    old = data.draw(hnp.arrays(np.float32, shape, elements=finite_floats))
    adv = data.draw(hnp.arrays(np.float32, shape, elements=big_advantages))
    kwargs = {"ppo_clip": {"clip_eps": clip_eps}, "ppo_clip_log": {"clip_eps": clip_eps},
              "kl_penalty": {"beta": beta}}
    for name, loss in POLICY_LOSSES.items():
        value, grad = jax.value_and_grad(loss)(jnp.asarray(lp), jnp.asarray(old), jnp.asarray(adv),
                                               **kwargs.get(name, {}))
        assert np.isfinite(float(value)), name
        assert bool(jnp.all(jnp.isfinite(grad))), name
    k1, k3 = losses.approx_kl(jnp.asarray(lp), jnp.asarray(old))
    assert np.isfinite(float(k1)) and np.isfinite(float(k3)) and float(k3) >= 0


@settings(max_examples=15, deadline=None)
@given(
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
    data=st.data(),
)
def test_forms_agree_for_any_shape(shape, data):
    """Log forms equal ratio forms in gradient for random shapes and log-probabilities."""
    elements = st.floats(-3.0, 0.0, allow_nan=False, width=32)
    lp = jnp.asarray(data.draw(hnp.arrays(np.float32, shape, elements=elements)))
    old = jnp.asarray(data.draw(hnp.arrays(np.float32, shape, elements=elements)))
    adv = jnp.asarray(data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-5, 5, width=32))))
    np.testing.assert_allclose(jax.grad(importance_ratio_loss)(lp, old, adv),
                               jax.grad(importance_log_loss)(lp, old, adv), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jax.grad(ppo_clip_loss)(lp, old, adv),
                               jax.grad(ppo_clip_log_loss)(lp, old, adv), rtol=1e-5, atol=1e-7)
    # At theta = theta_old every surrogate's gradient is the policy gradient's.
    for name in SURROGATES:
        np.testing.assert_allclose(jax.grad(POLICY_LOSSES[name])(old, old, adv),
                                   jax.grad(policy_gradient_loss)(old, old, adv), rtol=1e-5, atol=1e-7)


LOSSES_FILE = pathlib.Path(losses.__file__)


def test_losses_module_depends_on_nothing_in_the_package():
    tree = ast.parse(LOSSES_FILE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in losses.py"
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "collections", "chex", "jax"}, imported


def test_losses_used_standalone_in_a_flax_optax_step_under_jit_and_vmap(tmp_path):
    """Load losses.py on its own (no package) and train a tiny flax policy with optax."""
    script = tmp_path / "user_code.py"
    script.write_text(f"""
import importlib.util, sys
import flax.linen as nn, jax, jax.numpy as jnp, optax
spec = importlib.util.spec_from_file_location("my_losses", {str(LOSSES_FILE)!r})
L = importlib.util.module_from_spec(spec); spec.loader.exec_module(L)
assert not any(m.startswith("purejaxppo") for m in sys.modules), "package was imported"

policy = nn.Dense(3)
opt = optax.adam(1e-2)

def step(key):
    k_obs, k_init, k_act, k_adv = jax.random.split(key, 4)
    obs = jax.random.normal(k_obs, (32, 5))
    params = policy.init(k_init, obs)
    logp_all = jax.nn.log_softmax(policy.apply(params, obs))
    actions = jax.random.categorical(k_act, logp_all)
    old = jnp.take_along_axis(logp_all, actions[:, None], -1)[:, 0]
    adv = jax.random.normal(k_adv, (32,))
    def loss_fn(p):
        lp = jnp.take_along_axis(jax.nn.log_softmax(policy.apply(p, obs)), actions[:, None], -1)[:, 0]
        return L.ppo_clip_loss(lp, old, adv, clip_eps=0.2)
    state = opt.init(params)
    before = loss_fn(params)
    for _ in range(20):
        g = jax.grad(loss_fn)(params)
        upd, state = opt.update(g, state)
        params = optax.apply_updates(params, upd)
    return before, loss_fn(params)

before, after = jax.jit(jax.vmap(step))(jax.random.split(jax.random.key(0), 4))
assert before.shape == (4,) and bool(jnp.all(after < before)), (before, after)
print("ok", before, after)
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok")


def test_importing_losses_alone_is_possible():
    spec = importlib.util.spec_from_file_location("standalone_losses", LOSSES_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(module.POLICY_LOSSES) == set(POLICY_LOSSES)

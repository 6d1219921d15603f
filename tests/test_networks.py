"""networks.init_params: flax's parameter tree, orthogonal kernels with the right gains, Haar draws."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.env import make_env
from purejaxppo.networks import HIDDEN_GAIN, Actor, Critic, init_params, make_networks


def _nets(env_id: str, hidden: tuple[int, ...]):
    spec = make_env(env_id)
    actor, critic = make_networks(spec, hidden, "tanh")
    return spec, actor, critic


def _kernels(params: dict, net: str) -> dict[str, np.ndarray]:
    mlp = params[net]["params"]["MLP_0"]
    return {name: np.asarray(layer["kernel"]) for name, layer in mlp.items()}


@pytest.mark.parametrize(("env_id", "hidden"), [("CartPole-v1", (64, 64)), ("Pendulum-v1", (8,)),
                                                ("Acrobot-v1", (3, 16, 2))])
def test_tree_is_flax_init_tree_with_orthogonal_kernels_and_zero_rest(env_id, hidden):
    spec, actor, critic = _nets(env_id, hidden)
    params = init_params(jax.random.key(3), actor, critic, spec.obs_size)
    dummy = jnp.zeros((spec.obs_size,))
    flax_params = {"actor": actor.init(jax.random.key(3), dummy),
                   "critic": critic.init(jax.random.key(3), dummy)}
    assert jax.tree.structure(params) == jax.tree.structure(flax_params)
    for ours, theirs in zip(jax.tree.leaves(params), jax.tree.leaves(flax_params), strict=True):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    for net, head in (("actor", Actor.head_scale), ("critic", Critic.head_scale)):
        kernels = _kernels(params, net)
        assert len(kernels) == len(hidden) + 1
        for i in range(len(hidden) + 1):
            k = kernels[f"Dense_{i}"]
            gain = HIDDEN_GAIN if i < len(hidden) else head
            # Orthonormal columns when tall, orthonormal rows when wide, scaled by the gain.
            gram = k.T @ k if k.shape[0] >= k.shape[1] else k @ k.T
            np.testing.assert_allclose(gram, gain**2 * np.eye(min(k.shape)), atol=1e-5 * max(1, gain**2))
        others = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params[net])
                  if str(path[-1].key) != "kernel"]
        assert others and all(not np.any(np.asarray(leaf)) for leaf in others)
    # The networks run on these parameters.
    dist = actor.apply(params["actor"], jnp.ones((5, spec.obs_size)))
    assert np.all(np.isfinite(np.asarray(dist.log_prob(dist.mode()))))
    assert critic.apply(params["critic"], jnp.ones((5, spec.obs_size))).shape == (5,)


def test_draws_are_haar_like_flax_and_independent_across_keys_and_layers():
    """Over many keys: entry variance gain^2 / max(shape) (as flax's orthogonal init), no sign
    bias from the QR (LAPACK's R has a fixed sign; without the sign fix Q[0, 0] is always one
    sign), and kernels of different layers or nets uncorrelated."""
    spec, actor, critic = _nets("CartPole-v1", (16, 16))
    keys = jax.random.split(jax.random.key(11), 400)
    params = jax.jit(jax.vmap(lambda k: init_params(k, actor, critic, spec.obs_size)))(keys)
    dummy = jnp.zeros((spec.obs_size,))
    flax_first = jax.vmap(lambda k: actor.init(k, dummy))(keys)["params"]["MLP_0"]["Dense_0"]["kernel"]
    a0 = np.asarray(params["actor"]["params"]["MLP_0"]["Dense_0"]["kernel"])  # [400, 4, 16] wide
    a1 = np.asarray(params["actor"]["params"]["MLP_0"]["Dense_1"]["kernel"])  # [400, 16, 16]
    c1 = np.asarray(params["critic"]["params"]["MLP_0"]["Dense_1"]["kernel"])
    for k in (a0, a1):
        expected = HIDDEN_GAIN**2 / max(k.shape[1:])
        assert abs(k.var() / expected - 1) < 0.05
        first = k[:, 0, 0] / np.sqrt(expected)
        assert abs(first.mean()) < 4 / np.sqrt(len(first))  # ~N(0, 1)/sqrt(400): 4 sigma
    assert abs(a0.var() / np.asarray(flax_first).var() - 1) < 0.1
    corr = np.corrcoef(np.stack([a1[:, 0, 0], c1[:, 0, 0], a0[:, 0, 0]]))
    assert np.all(np.abs(corr[np.triu_indices(3, 1)]) < 0.2)
    # Different keys, different parameters; one key, the same parameters bit for bit.
    assert not np.array_equal(a1[0], a1[1])
    one = init_params(keys[5], actor, critic, spec.obs_size)
    np.testing.assert_array_equal(one["actor"]["params"]["MLP_0"]["Dense_1"]["kernel"], a1[5])

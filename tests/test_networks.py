"""Networks: the registry, the CNN, and init_params (flax's tree, orthogonal kernels, Haar draws)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import OPTIMIZED

from purejaxppo import PPOConfig, envs, make_train
from purejaxppo.distributions import Categorical, DiagGaussian
from purejaxppo.networks import (
    HIDDEN_GAIN,
    Actor,
    Critic,
    Networks,
    init_params,
    make_networks,
)


def _nets(env_id: str, hidden: tuple[int, ...]):
    env = envs.make(env_id)
    nets = make_networks(env, PPOConfig(env=env_id, hidden_sizes=hidden))
    return env, nets.actor, nets.critic


def _kernels(params: dict, net: str) -> dict[str, np.ndarray]:
    mlp = params[net]["params"]["MLP_0"]
    return {name: np.asarray(layer["kernel"]) for name, layer in mlp.items()}


@pytest.mark.parametrize(("env_id", "hidden"), [("CartPole-v1", (64, 64)), ("Pendulum-v1", (8,)),
                                                ("Acrobot-v1", (3, 16, 2))])
def test_tree_is_flax_init_tree_with_orthogonal_kernels_and_zero_rest(env_id, hidden):
    env, actor, critic = _nets(env_id, hidden)
    params = init_params(jax.random.key(3), actor, critic, env.obs_size)
    dummy = jnp.zeros((env.obs_size,))
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
    dist = actor.apply(params["actor"], jnp.ones((5, env.obs_size)))
    assert np.all(np.isfinite(np.asarray(dist.log_prob(dist.mode()))))
    assert critic.apply(params["critic"], jnp.ones((5, env.obs_size))).shape == (5,)


def test_draws_are_haar_like_flax_and_independent_across_keys_and_layers():
    """Over many keys: entry variance gain^2 / max(shape) (as flax's orthogonal init), no sign
    bias from the QR (LAPACK's R has a fixed sign; without the sign fix Q[0, 0] is always one
    sign), and kernels of different layers or nets uncorrelated."""
    env, actor, critic = _nets("CartPole-v1", (16, 16))
    keys = jax.random.split(jax.random.key(11), 400)
    params = jax.jit(jax.vmap(lambda k: init_params(k, actor, critic, env.obs_size)),
                     compiler_options=OPTIMIZED)(keys)
    dummy = jnp.zeros((env.obs_size,))
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
    # Both compiled optimized (conftest.OPTIMIZED): unoptimized, vmapped and not round apart.
    one = jax.jit(lambda k: init_params(k, actor, critic, env.obs_size),
                  compiler_options=OPTIMIZED)(keys[5])
    np.testing.assert_array_equal(one["actor"]["params"]["MLP_0"]["Dense_1"]["kernel"], a1[5])


def test_registry_builds_mlp_and_cnn_and_refuses_unknown_names():
    from purejaxppo.networks import CNNActor, CNNCritic, registered_networks

    breakout = envs.make("Breakout-MinAtar")
    assert {"mlp", "cnn"} <= set(registered_networks())
    nets = make_networks(breakout, PPOConfig(env="Breakout-MinAtar", network="cnn"))
    assert isinstance(nets.actor, CNNActor) and isinstance(nets.critic, CNNCritic)
    with pytest.raises(ValueError, match="unknown network 'cnm'. Did you mean 'cnn'"):
        make_networks(breakout, PPOConfig(env="Breakout-MinAtar", network="cnm"))
    with pytest.raises(ValueError, match=r"needs \[height, width, channels\]"):
        make_networks(envs.make("CartPole-v1"), PPOConfig(network="cnn"))


def test_cnn_sees_the_grid_not_the_flat_vector():
    """The CNN restores MinAtar's [10, 10, C] grid from the flat observation: moving one object
    to a neighbouring cell changes its first layer's response only around that cell."""
    from purejaxppo.networks import ConvTorso, init_networks

    env = envs.make("Breakout-MinAtar")
    nets = make_networks(env, PPOConfig(env="Breakout-MinAtar", network="cnn"))
    params = init_networks(jax.random.key(0), nets, env.obs_size)
    conv = params["actor"]["params"]["ConvTorso_0"]["Conv_0"]
    assert conv["kernel"].shape == (3, 3, 4, 16)
    torso = ConvTorso(env.obs_shape, (), "relu")
    torso_params = {"params": {"Conv_0": conv}}
    grid = np.zeros((10, 10, 4), np.float32)
    grid[2, 2, 0] = 1.0
    moved = np.zeros_like(grid)
    moved[2, 3, 0] = 1.0
    a = np.asarray(torso.apply(torso_params, jnp.asarray(grid.reshape(-1)))).reshape(8, 8, 16)
    b = np.asarray(torso.apply(torso_params, jnp.asarray(moved.reshape(-1)))).reshape(8, 8, 16)
    changed = np.argwhere(np.abs(a - b).max(axis=-1) > 0)
    assert changed.size and changed[:, 0].max() <= 2 and changed[:, 1].max() <= 3
    batched = torso.apply(torso_params, jnp.zeros((2, 3, env.obs_size)))
    assert batched.shape == (2, 3, 8 * 8 * 16)


def test_cnn_trains_on_minatar():
    from purejaxppo import make_train

    config = PPOConfig(env="Breakout-MinAtar", network="cnn", hidden_sizes=(32,),
                       activation="relu", total_timesteps=4 * 512, num_envs=8, num_steps=64,
                       update_epochs=1, num_minibatches=2)
    result = jax.jit(make_train(config))(jax.random.key(0))
    for name in ("policy_loss", "value_loss", "entropy", "approx_kl"):
        assert np.isfinite(np.asarray(result.metrics[name])).all(), name
    assert result.params["critic"]["params"]["ConvTorso_0"]["Conv_0"]["kernel"].shape == (
        3, 3, 4, 16)


# linear: nn.Dense's product with a backward pass arranged for XLA:CPU; same values as autodiff's.

def _plain(x, kernel, bias):
    return x @ kernel + bias


@pytest.mark.parametrize(("shape", "n_out"), [((128, 4), 64), ((128, 64), 64), ((128, 64), 2),
                                              ((5, 3, 64), 1), ((7, 16), 32), ((9, 6), 5)])
def test_linear_gradients_equal_the_plain_products(shape, n_out):
    from purejaxppo.networks import linear
    k = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(k[0], shape)
    kernel = jax.random.normal(k[1], (shape[-1], n_out))
    bias = jax.random.normal(k[2], (n_out,))
    g = jax.random.normal(k[3], shape[:-1] + (n_out,))
    np.testing.assert_array_equal(linear(x, kernel, bias), _plain(x, kernel, bias))
    expected = jax.vjp(_plain, x, kernel, bias)[1](g)
    got = jax.jit(lambda *a: jax.vjp(linear, *a)[1](g))(x, kernel, bias)
    for e, o in zip(expected, got, strict=True):
        assert o.shape == e.shape
        np.testing.assert_allclose(o, e, rtol=1e-5, atol=1e-4)
    # vmapped over a leading axis (seeds), as training runs it
    xs, ks, gs = jnp.stack([x, 2 * x]), jnp.stack([kernel, -kernel]), jnp.stack([g, g])
    vexp = jax.vmap(lambda x_, k_, g_: jax.vjp(_plain, x_, k_, bias)[1](g_))(xs, ks, gs)
    vgot = jax.jit(jax.vmap(lambda x_, k_, g_: jax.vjp(linear, x_, k_, bias)[1](g_)))(xs, ks, gs)
    for e, o in zip(vexp, vgot, strict=True):
        np.testing.assert_allclose(o, e, rtol=1e-5, atol=1e-4)


def test_linear_second_order_products_equal_the_plain_ones():
    # TRPO's Fisher products differentiate the gradient again (forward over reverse)
    from purejaxppo.networks import linear
    k = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(k[0], (16, 4))
    kernel, v = 0.3 * jax.random.normal(k[1], (4, 3)), jax.random.normal(k[2], (4, 3))
    bias = jnp.zeros(3)

    def hvp(lin):
        loss = lambda w: jnp.sum(jnp.tanh(lin(x, w, bias)) ** 2)  # noqa: E731
        return jax.linearize(jax.grad(loss), kernel)[1](v)

    np.testing.assert_allclose(hvp(linear), hvp(_plain), rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(hvp(linear)).max()) > 0.1


def test_dense_has_nn_dense_parameters_and_output():
    import flax.linen as nn

    from purejaxppo.networks import Dense
    x = jax.random.normal(jax.random.key(2), (3, 4))
    ours = Dense(5).init(jax.random.key(0), x)
    theirs = nn.Dense(5).init(jax.random.key(0), x)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    np.testing.assert_array_equal(Dense(5).apply(ours, x), nn.Dense(5).apply(theirs, x))


def test_conv_is_nn_conv_with_the_same_parameters_values_and_gradients():
    import flax.linen as nn

    from purejaxppo.networks import Conv
    x = jax.random.normal(jax.random.key(1), (5, 10, 10, 4))
    ours = Conv(16, kernel_init=nn.initializers.orthogonal(1.4))
    theirs = nn.Conv(16, (3, 3), padding="VALID", kernel_init=nn.initializers.orthogonal(1.4))
    p_ours, p_theirs = ours.init(jax.random.key(0), x), theirs.init(jax.random.key(0), x)
    assert jax.tree.structure(p_ours) == jax.tree.structure(p_theirs)
    jax.tree.map(np.testing.assert_array_equal, p_ours, p_theirs)
    out = ours.apply(p_ours, x)
    assert out.shape == (5, 8, 8, 16)
    np.testing.assert_allclose(out, theirs.apply(p_theirs, x), rtol=1e-5, atol=1e-5)
    p_ours = jax.tree.map(lambda a: a + 0.1, p_ours)  # nonzero bias, so its gradient path counts
    p_theirs = jax.tree.map(lambda a: a + 0.1, p_theirs)
    loss = lambda net, p: jnp.sum(jnp.tanh(net.apply(p, x)) ** 2)  # noqa: E731
    g_ours = jax.jit(jax.grad(lambda p: loss(ours, p)))(p_ours)
    g_theirs = jax.grad(lambda p: loss(theirs, p))(p_theirs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
                 g_ours, g_theirs)


class _Logits(nn.Module):
    """An actor of ``width`` logits (or a Gaussian of ``width`` means with ``gaussian``)."""

    width: int
    gaussian: bool = False

    @nn.compact
    def __call__(self, x):
        out = nn.Dense(self.width)(x)
        return DiagGaussian(mean=out, log_std=jnp.zeros(self.width)) if self.gaussian \
            else Categorical(logits=out)


class _Value(nn.Module):
    keep_axis: bool = False

    @nn.compact
    def __call__(self, x):
        v = nn.Dense(1)(x)
        return v if self.keep_axis else v[..., 0]


@pytest.mark.parametrize("env_id,nets,words", [
    ("CartPole-v1", Networks(actor=_Logits(1), critic=_Value()),
     "the actor's Categorical has logits of shape [2, 1] for 2 observations: CartPole-v1 needs "
     "[2, 2]"),
    ("CartPole-v1", Networks(actor=_Logits(2), critic=_Value(keep_axis=True)),
     "the critic returned shape [2, 1] for 2 observations: it must return one value each"),
    ("Pendulum-v1", Networks(actor=_Logits(1), critic=_Value()),
     "the actor returned a Categorical for Pendulum-v1's Box actions: it must return a "
     "DiagGaussian"),
    ("CartPole-v1", Networks(actor=_Logits(2, gaussian=True), critic=_Value()),
     "the actor returned a DiagGaussian for CartPole-v1's Discrete actions"),
    ("CartPole-v1", Networks(actor=_Value(keep_axis=True), critic=_Value()),
     "the actor returned an array for CartPole-v1's Discrete actions: it must return a "
     "Categorical"),
])
def test_a_users_network_whose_outputs_do_not_fit_the_env_is_refused(env_id, nets, words):
    """Before: a 1-logit actor on 2 actions broadcast against the noise and trained silently."""
    with pytest.raises(ValueError) as error:
        make_train(PPOConfig(env=env_id), networks=nets)
    assert words in str(error.value)


def test_a_users_network_that_fits_is_accepted():
    train = make_train(PPOConfig(env="Pendulum-v1"),
                       networks=Networks(actor=_Logits(1, gaussian=True), critic=_Value()))
    assert callable(train)


def test_cnn_on_a_grid_part_checks_the_parts_add_up():
    """An adapter's ``observation_parts`` must describe its flat observation: parts that do not
    add up are a one-line error; a layout without a single grid is the usual refusal."""
    from types import SimpleNamespace

    from purejaxppo import networks

    config = PPOConfig(network="cnn")
    env = SimpleNamespace(obs_shape=(11,), obs_size=11, obs_parts=((3, 3, 1), (1,)),
                          env_id="Mine-v0", action_size=2, discrete=True, action_nvec=())
    with pytest.raises(ValueError, match=r"Mine-v0's observation_parts .* hold 10 values, its "
                                         r"observation 11"):
        networks.make_networks(env, config)
    env.obs_parts = ((3, 3, 1), (2,))
    nets = networks.make_networks(env, config)
    assert (nets.actor.start, nets.actor.extra) == (0, 2)
    env.obs_parts = ((2,), (3, 3, 1))
    nets = networks.make_networks(env, config)
    assert (nets.critic.start, nets.critic.extra) == (2, 2)
    env.obs_parts = ((11,),)
    with pytest.raises(ValueError, match=r"needs \[height, width, channels\] observations"):
        networks.make_networks(env, config)

    # The grid found where it is: a torso with the grid after two values computes what one with
    # the grid first computes on the same values moved (the others keep their order).
    after = networks.ConvTorso((3, 3, 1), (4,), start=2, extra=2)
    first = networks.ConvTorso((3, 3, 1), (4,), start=0, extra=2)
    x = jax.random.normal(jax.random.key(0), (5, 11))
    params = after.init(jax.random.key(1), x)
    moved = jnp.concatenate([x[:, 2:], x[:, :2]], axis=-1)
    np.testing.assert_allclose(after.apply(params, x), first.apply(params, moved), rtol=1e-6)
    assert not np.allclose(after.apply(params, x), first.apply(params, x))


def test_cnn_refuses_a_grid_smaller_than_its_kernel():
    """Before: a 2x2 grid gave a 0x0 convolution output, and a policy and a value that did not
    depend on the observation at all."""
    from types import SimpleNamespace

    from purejaxppo import networks

    env = SimpleNamespace(obs_shape=(2, 2, 1), obs_size=4, obs_parts=((2, 2, 1),),
                          env_id="Tiny-v0", action_size=2, discrete=True, action_nvec=())
    with pytest.raises(ValueError, match=r"at least 3x3 .* Tiny-v0's is 2x2: use network='mlp'"):
        networks.make_networks(env, PPOConfig(network="cnn"))
    env.obs_shape, env.obs_size, env.obs_parts = (3, 5, 1), 15, ((3, 5, 1),)
    assert networks.make_networks(env, PPOConfig(network="cnn")).actor.obs_shape == (3, 5, 1)

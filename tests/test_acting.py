"""acting.policy: arguments that do not fit the observations are refused by name."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY

from purejaxppo import PPOConfig, initial_carry, make_train, policy


@pytest.fixture(scope="module")
def cartpole():
    config = PPOConfig(**{**TINY, "total_timesteps": 256})
    return config, jax.jit(make_train(config))(jax.random.key(0)).params


KEY = jax.random.key(0)


@pytest.mark.parametrize("kwargs,words", [
    (dict(key=0), "key must be a PRNG key such as jax.random.key(0), got int32[]"),
    (dict(key=jax.random.split(KEY, 3)), "key must be a PRNG key"),
    (dict(key=KEY, deterministic="yes"), "deterministic='yes' is invalid: must be True or False"),
    (dict(key=KEY, action_mask=jnp.array([True])), "action_mask has shape [1]; for these "
                                                   "observations it must be [2]"),
    (dict(key=KEY, action_mask=jnp.array([False, False])), "action_mask allows no action"),
])
def test_policy_refuses_what_does_not_fit(cartpole, kwargs, words):
    config, params = cartpole
    with pytest.raises(ValueError) as error:
        policy(config)(params, jnp.zeros(4), **kwargs)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_policy_accepts_keys_masks_and_batches_that_fit(cartpole):
    config, params = cartpole
    act = policy(config)
    legacy = jnp.array([0, 1], jnp.uint32)
    assert act(params, jnp.zeros(4), legacy).shape == ()
    masked = act(params, jnp.zeros((64, 4)), KEY, action_mask=jnp.array([[False, True]] * 64))
    assert (np.asarray(masked) == 1).all()  # the only valid action, every time
    # Under jit and vmap the shapes are still checked, and the values go through.
    keys = jax.random.split(KEY, 5)
    assert jax.vmap(act, in_axes=(None, 0, 0))(params, jnp.zeros((5, 4)), keys).shape == (5,)
    det = jax.jit(act, static_argnames="deterministic")
    assert det(params, jnp.zeros(4), None, deterministic=True) == det(
        params, jnp.zeros(4), None, deterministic=True)


def test_recurrent_policy_refuses_a_hidden_state_of_another_batch():
    config = PPOConfig(**{**TINY, "total_timesteps": 256, "network": "gru"})
    params = jax.jit(make_train(config))(KEY).params
    act = policy(config)
    with pytest.raises(ValueError, match=r"hidden state is for a batch of \[3\] observations, "
                                         r"not \[\]: start it with initial_carry\(config, \(\)\)"):
        act(params, initial_carry(config, (3,)), jnp.zeros(4), KEY)
    carry, action = act(params, initial_carry(config, (3,)), jnp.zeros((3, 4)), KEY)
    assert action.shape == (3,) and jax.tree.leaves(carry)[0].shape[0] == 3


def test_continuous_policy_refuses_an_action_mask():
    config = PPOConfig(**{**TINY, "total_timesteps": 256, "env": "Pendulum-v1"})
    params = jax.jit(make_train(config))(KEY).params
    with pytest.raises(ValueError, match="action_mask is for discrete actions"):
        policy(config)(params, jnp.zeros(3), KEY, action_mask=jnp.array([True]))


def test_obs_stats_of_several_seeds_are_refused():
    config = PPOConfig(**{**TINY, "total_timesteps": 256, "normalize_obs": True})
    runs = jax.jit(jax.vmap(make_train(config)))(jax.random.split(KEY, 2))
    params = jax.tree.map(lambda x: x[0], runs.params)
    stats = runs.state.env_carry.normalizer.obs
    with pytest.raises(ValueError, match=r"obs_stats are for observations of shape \[2, 4\], "
                                         r"not \[4\]"):
        policy(config)(params, jnp.zeros(4), KEY, obs_stats=stats)
    one = jax.tree.map(lambda x: x[0], stats)
    assert policy(config)(params, jnp.zeros(4), KEY, obs_stats=one).shape == ()

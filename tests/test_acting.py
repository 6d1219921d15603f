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


class _MultiDiscreteWorld:
    """Observations of two indices (MultiDiscrete (3, 4)), actions of two factors (2, 3)."""

    observation_space = None  # set below, once purejaxppo.envs is imported
    action_space = None
    max_episode_steps = 10

    def reset(self, key):
        return jnp.array([0, 0]), jnp.int32(0)

    def transition(self, key, state, action):
        return jnp.stack([action[0], action[1]]), state + 1, 1.0, False, False


def test_policy_acts_on_multidiscrete_observations_and_refuses_an_empty_factor():
    """Before: ``policy`` read a MultiDiscrete observation as shape () and failed to reshape it,
    and a mask with no valid value of one factor gave that factor's masked-out value 0."""
    from purejaxppo import envs
    from purejaxppo.train import make_agent

    _MultiDiscreteWorld.observation_space = envs.MultiDiscrete((3, 4))
    _MultiDiscreteWorld.action_space = envs.MultiDiscrete((2, 3))
    envs.register("MultiDiscreteWorld-v0", _MultiDiscreteWorld)
    config = PPOConfig(**{**TINY, "total_timesteps": 256, "env": "MultiDiscreteWorld-v0"})
    params = jax.jit(make_train(config))(KEY).params
    act = policy(config)
    obs = jnp.array([[1, 2], [0, 3], [2, 0]])
    actions = act(params, obs, deterministic=True)
    agent = make_agent(config)
    flat = jax.vmap(agent.env.flatten)(obs)
    factors = agent.nets.actor.apply(params["actor"], flat).factors
    expected = jnp.stack([f.logits.argmax(-1) for f in factors], -1)
    assert actions.shape == (3, 2) and (np.asarray(actions) == np.asarray(expected)).all()
    assert (np.asarray(act(params, obs[0], deterministic=True)) == np.asarray(expected[0])).all()
    with pytest.raises(ValueError) as error:
        act(params, obs[0], KEY, action_mask=jnp.array([False, False, True, False, True]))
    assert "no value of the action's factor 0" in str(error.value)
    assert "\n" not in str(error.value)
    # One valid value per factor: that value, every time.
    only = act(params, jnp.tile(obs[:1], (32, 1)), KEY,
               action_mask=jnp.tile(jnp.array([False, True, False, False, True]), (32, 1)))
    assert (np.asarray(only) == np.array([1, 2])).all()

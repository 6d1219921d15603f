"""Environments: the protocol, auto-reset in one place, gymnax as an adapter, registered envs."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import PPOConfig, envs, make_train
from purejaxppo.rollout import reset_batch


class ChainState(NamedTuple):
    position: jax.Array


class Chain:
    """An adapter: walk right (action 1) along 0..length; reward 1 and termination at the end.

    No time limit of its own (``max_episode_steps`` None) unless registered with one.
    """

    observation_space = envs.Box.of((2,), 0.0, 1.0)
    action_space = envs.Discrete(2)
    max_episode_steps = None

    def __init__(self, length: int = 4) -> None:
        self.length = length

    def reset(self, key: jax.Array) -> tuple[jax.Array, ChainState]:
        del key
        return self._obs(jnp.zeros((), jnp.int32)), ChainState(jnp.zeros((), jnp.int32))

    def transition(self, key: jax.Array, state: ChainState, action: jax.Array):
        del key
        position = jnp.clip(state.position + 2 * action - 1, 0, self.length)
        at_end = position == self.length
        return (self._obs(position), ChainState(position), at_end.astype(jnp.float32), at_end,
                jnp.zeros((), bool))

    def _obs(self, position: jax.Array) -> jax.Array:
        return jnp.stack([position / self.length, 1.0 - position / self.length])


@pytest.fixture
def registered():
    names = []

    def register(name: str, factory: Any, **kwargs: Any) -> None:
        envs.register(name, factory, **kwargs)
        names.append(name)

    yield register
    for name in names:
        envs.unregister(name)


def test_gymnax_ids_resolve_bare_and_prefixed_with_their_spaces():
    bare, prefixed = envs.make("CartPole-v1"), envs.make("gymnax:CartPole-v1")
    for env in (bare, prefixed):
        assert env.observation_space == envs.Box.of((4,), env.observation_space.low,
                                                    env.observation_space.high)
        assert env.action_space == envs.Discrete(2)
        assert env.obs_size == 4 and env.discrete and env.action_size == 2
    pendulum = envs.make("Pendulum-v1")
    assert isinstance(pendulum.action_space, envs.Box) and not pendulum.discrete
    assert pendulum.action_space.low == (-2.0,) and pendulum.action_space.high == (2.0,)
    breakout = envs.make("Breakout-MinAtar")
    assert breakout.obs_shape == (10, 10, 4) and breakout.obs_size == 400


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Breakout-MinAtar", "Pendulum-v1"])
def test_auto_reset_equals_gymnax_step_at_the_time_limit(env_id):
    """Every env one step from its time limit: ``Env.step`` (auto-reset done by the protocol)
    gives gymnax's own ``step`` results, keeps the real last observation, and resets."""
    env = envs.make(env_id)
    gym, params = env.adapter.env, env.adapter.params
    n = 64
    _, state = reset_batch(env, jax.random.split(jax.random.key(0), n))
    state = state.replace(time=jnp.full((n,), params.max_steps_in_episode - 1))
    actions = (jax.random.randint(jax.random.key(1), (n,), 0, env.action_size) if env.discrete
               else jax.random.normal(jax.random.key(1), (n, env.action_size)))
    step_keys = jax.random.split(jax.random.key(2), n)
    obs, new_state, reward, term, trunc, final_obs = jax.vmap(env.step)(step_keys, state, actions)
    theirs = jax.vmap(gym.step, in_axes=(0, 0, 0, None))(step_keys, state, actions, params)
    assert bool(trunc.all())
    flat = jax.vmap(env.flatten)
    np.testing.assert_allclose(final_obs, flat(theirs[5]["final_observation"]), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(obs, flat(theirs[0]), rtol=1e-5, atol=1e-6)  # same reset keys
    np.testing.assert_allclose(reward, theirs[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(term, theirs[3])
    np.testing.assert_array_equal(trunc, theirs[4])
    assert int(new_state.time.max()) == 0
    assert not np.allclose(obs, final_obs)  # the episode's last observation is kept apart


def test_pre_drawn_reset_replaces_ended_episodes_only():
    env = envs.make("CartPole-v1")
    n = 8
    _, state = reset_batch(env, jax.random.split(jax.random.key(0), n))
    ending = jnp.arange(n) % 2 == 0
    limit = env.adapter.params.max_steps_in_episode
    state = state.replace(time=jnp.where(ending, limit - 1, 3))
    reset = reset_batch(env, jax.random.split(jax.random.key(5), n))
    obs, new_state, _, term, trunc, final_obs = jax.vmap(env.step)(
        jax.random.split(jax.random.key(1), n), state, jnp.zeros(n, jnp.int32), reset)
    done = np.asarray(term | trunc)
    np.testing.assert_array_equal(done, np.asarray(ending))
    np.testing.assert_array_equal(obs[done], reset[0][done])
    np.testing.assert_array_equal(obs[~done], final_obs[~done])
    np.testing.assert_array_equal(new_state.time, np.where(done, 0, 4))


def test_discrete_observations_are_one_hot():
    env = envs.make("FrozenLake-misc")
    n = env.observation_space.n
    assert env.observation_space == envs.Discrete(n) and env.obs_size == n
    keys = jax.random.split(jax.random.key(0), 5)
    raw = jax.vmap(lambda k: env.adapter.reset(k)[0])(keys)
    obs, _ = reset_batch(env, keys)
    np.testing.assert_array_equal(obs, np.eye(n, dtype=np.float32)[np.asarray(raw)])


def test_unknown_ids_suggest_close_names_registered_ones_included(registered):
    with pytest.raises(ValueError, match="'CartPole-v1'") as error:
        envs.make("Cartpole-v1")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="download"):
        envs.make("MNISTBandit-bsuite")
    registered("LongCorridor-v3", Chain)
    with pytest.raises(ValueError, match="'LongCorridor-v3'"):
        envs.make("LongCoridor-v3")
    assert "LongCorridor-v3" in envs.registered()


def test_register_refuses_bad_input(registered):
    with pytest.raises(ValueError, match="gymnax"):
        envs.register("CartPole-v1", Chain)
    with pytest.raises(ValueError, match="non-empty"):
        envs.register("", Chain)
    with pytest.raises(ValueError, match="callable"):
        envs.register("X-v0", Chain())
    with pytest.raises(ValueError, match="max_episode_steps"):
        envs.register("X-v0", Chain, max_episode_steps=0)
    for bad in (float("nan"), float("inf"), 2.5, True):
        with pytest.raises(ValueError, match="max_episode_steps"):
            envs.register("X-v0", Chain, max_episode_steps=bad)
    registered("Junk-v0", lambda: object())
    with pytest.raises(ValueError, match="must return a gymnax Environment or a purejaxppo"):
        envs.make("Junk-v0")
    # An adapter's own time limit is checked as register's is: 0 would truncate every step.
    for bad in (0, -5, 2.7, "x"):
        class Limited(Chain):
            max_episode_steps = bad

        registered("Limited-v0", Limited)
        with pytest.raises(ValueError, match=rf"adapter of 'Limited-v0' has max_episode_steps="
                                             rf"{re.escape(repr(bad))}: give a positive whole"):
            envs.make("Limited-v0")


def test_unsupported_spaces_are_named(registered):
    class Grid(Chain):
        action_space = envs.Box.of((2, 2), -1.0, 1.0)

    class Factored(Chain):
        action_space = envs.MultiDiscrete((2, 0))

    registered("Grid-v0", Grid)
    registered("Factored-v0", Factored)
    with pytest.raises(ValueError, match=r"Box action space of shape \(2, 2\)"):
        envs.make("Grid-v0")
    with pytest.raises(ValueError, match=r"MultiDiscrete action space \(2, 0\); every factor"):
        envs.make("Factored-v0")


def test_adapters_that_break_their_own_spaces_are_refused_at_make(registered):
    """make traces reset and one transition of a registered adapter: what would otherwise fail
    inside the rollout (or train silently on reshaped observations) is one line naming it."""

    class WideObs(Chain):
        def reset(self, key):
            obs, state = super().reset(key)
            return jnp.concatenate([obs, obs[:1]]), state

    class FloatPosition(Chain):
        def transition(self, key, state, action):
            obs, state, *rest = super().transition(key, state, action)
            return (obs, ChainState(state.position.astype(jnp.float32)), *rest)

    class VectorReward(Chain):
        def transition(self, key, state, action):
            obs, state, reward, term, trunc = super().transition(key, state, action)
            return obs, state, jnp.stack([reward, reward]), term, trunc

    class FourOutputs(Chain):
        def transition(self, key, state, action):
            return super().transition(key, state, action)[:4]

    class Broken(Chain):
        def transition(self, key, state, action):
            return self.no_such_attribute

    cases = [(WideObs, r"reset returns an observation of shape \[3\], but its observation "
                       r"space .* has 2 values"),
             (FloatPosition, r"the state's field .*position is float32\[\] after transition "
                             r"but int32\[\] after reset"),
             (VectorReward, r"transition's reward has shape \[2\]: one environment's must be "
                            r"a scalar"),
             (FourOutputs, r"transition must return \(obs, state, reward, terminated, "
                           r"truncated\), got tuple of 4")]
    for cls, words in cases:
        registered(f"{cls.__name__}-v0", cls)
        with pytest.raises(ValueError, match=rf"^environment '{cls.__name__}-v0': {words}"):
            envs.make(f"{cls.__name__}-v0")
    # The adapter's own error is its own: type and message unchanged (the command line then
    # names its file and line).
    registered("Broken-v0", Broken)
    with pytest.raises(AttributeError, match="no_such_attribute"):
        envs.make("Broken-v0")
    registered("Chain-v0", Chain)
    assert envs.make("Chain-v0").obs_size == 2  # the well-formed one passes


def test_registered_adapter_time_limit_truncates_with_the_real_last_observation(registered):
    """An adapter without a time limit of its own, registered with one: the protocol counts the
    steps, truncates (not terminates) and keeps the last observation in final_obs."""
    registered("Chain-v0", lambda: Chain(length=10), max_episode_steps=3)
    env = envs.make("Chain-v0")
    assert env.time_limit == 3
    obs, state = env.reset(jax.random.key(0))
    step = jax.jit(env.step)
    seen = []
    for t in range(3):
        obs, state, reward, term, trunc, final_obs = step(jax.random.key(t), state, jnp.int32(1))
        seen.append((bool(term), bool(trunc), np.asarray(final_obs), np.asarray(obs)))
    assert [s[:2] for s in seen] == [(False, False), (False, False), (False, True)]
    np.testing.assert_allclose(seen[2][2], [0.3, 0.7], rtol=1e-6)  # position 3 of 10
    np.testing.assert_allclose(seen[2][3], [0.0, 1.0])  # the next episode's first observation
    assert int(state.steps) == 0 and int(state.inner.position) == 0


def test_registered_adapter_termination_is_not_truncation(registered):
    registered("ShortChain-v0", lambda: Chain(length=2), max_episode_steps=50)
    env = envs.make("ShortChain-v0")
    _, state = env.reset(jax.random.key(0))
    _, state, r1, t1, u1, _ = env.step(jax.random.key(1), state, jnp.int32(1))
    _, state, r2, t2, u2, final_obs = env.step(jax.random.key(2), state, jnp.int32(1))
    assert (bool(t1), bool(u1), float(r1)) == (False, False, 0.0)
    assert (bool(t2), bool(u2), float(r2)) == (True, False, 1.0)
    np.testing.assert_allclose(final_obs, [1.0, 0.0])


def test_registered_gymnax_api_env_takes_its_own_time_limit(registered):
    """A gymnax ``Environment`` registered by a user: its ``max_steps_in_episode`` truncates."""
    from gymnax.environments.classic_control import cartpole

    class ShortCartPole(cartpole.CartPole):
        @property
        def default_params(self):
            return super().default_params.replace(max_steps_in_episode=5)

    registered("ShortCartPole-v0", ShortCartPole)
    env = envs.make("ShortCartPole-v0")
    _, state = env.reset(jax.random.key(0))
    truncs = []
    for t in range(5):
        _, state, _, term, trunc, _ = env.step(jax.random.key(t), state, jnp.int32(t % 2))
        truncs.append(bool(trunc) and not bool(term))
    assert truncs == [False] * 4 + [True]


def test_registered_env_trains_and_learns_everywhere(registered):
    """make_train, vmapped seeds and the policy all take a registered id."""
    registered("Chain-v1", lambda: Chain(length=4), max_episode_steps=20)
    config = PPOConfig(env="Chain-v1", total_timesteps=16 * 512, num_envs=4, num_steps=128,
                       lr=3e-3)
    result = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.key(0), 2))
    lengths = np.asarray(result.metrics["episode_length"])
    assert np.isfinite(lengths).all()
    # Walking right takes 4 steps; a random walk takes far longer: both seeds learn to walk.
    assert (lengths[:, -1] < 6).all(), lengths[:, -1]


class LockState(NamedTuple):
    valid: jax.Array
    """bool[7]: the valid values of both factors, one after the other."""
    target: jax.Array
    """int[2]: the right value of each factor (a valid one)."""
    invalid_sent: jax.Array


class Lock:
    """A masked MultiDiscrete adapter: two factors of 3 and 4 values, a random subset valid (at
    least one per factor, often one only), reward = number of factors set to their target.

    The observation shows the targets; an invalid action ends the episode with reward -10 and is
    counted in the state (``invalid_sent``, carried over resets by the test through the reward).
    """

    observation_space = envs.Box.of((7,), 0.0, 1.0)
    action_space = envs.MultiDiscrete((3, 4))
    max_episode_steps = 5

    def reset(self, key: jax.Array) -> tuple[jax.Array, LockState]:
        k_valid, k_target = jax.random.split(key)
        valid = jax.random.bernoulli(k_valid, 0.4, (7,))
        target = jnp.stack([jax.random.choice(k, n, p=v / v.sum()) for k, n, v in zip(
            jax.random.split(k_target), (3, 4), self._ensure(valid), strict=True)])
        valid = jnp.concatenate(self._ensure(valid))
        obs = jnp.concatenate([jax.nn.one_hot(target[0], 3), jax.nn.one_hot(target[1], 4)])
        return obs, LockState(valid=valid, target=target, invalid_sent=jnp.zeros((), bool))

    @staticmethod
    def _ensure(valid: jax.Array) -> tuple[jax.Array, jax.Array]:
        a, b = valid[:3], valid[3:]
        return a.at[0].set(a[0] | ~a.any()), b.at[3].set(b[3] | ~b.any())

    def action_mask(self, state: LockState) -> jax.Array:
        return state.valid

    def transition(self, key: jax.Array, state: LockState, action: jax.Array):
        obs, new_state = self.reset(key)
        invalid = ~(state.valid[action[0]] & state.valid[3 + action[1]])
        reward = jnp.sum(action == state.target).astype(jnp.float32)
        return (obs, new_state._replace(invalid_sent=invalid), jnp.where(invalid, -10.0, reward),
                invalid, jnp.zeros((), bool))


def test_masked_multidiscrete_env_never_gets_an_invalid_action_and_learns(registered):
    from purejaxppo import networks as netlib
    from purejaxppo import rollout

    registered("Lock-v0", Lock)
    env = envs.make("Lock-v0")
    assert env.masked and env.discrete and env.action_nvec == (3, 4) and env.action_size == 7
    config = PPOConfig(env="Lock-v0", total_timesteps=20 * 512, num_envs=8, num_steps=64,
                       lr=3e-3, ent_coef=0.0)
    # The rollout stores each step's mask; every sampled action is valid under it.
    nets = netlib.make_networks(env, config)
    params = netlib.init_networks(jax.random.key(0), nets, env.obs_size)
    carry = rollout.init_env_carry(env, jax.random.key(1), 8)
    _, traj, _ = rollout.collect(env, nets, params, carry, jax.random.key(2), 256, 0.99,
                                 False, False)
    mask, action = np.asarray(traj.action_mask), np.asarray(traj.action)
    assert mask.shape == (256, 8, 7) and action.shape == (256, 8, 2)
    assert not mask.all()  # the masks do exclude actions
    assert np.take_along_axis(mask[..., :3], action[..., :1], -1).all()
    assert np.take_along_axis(mask[..., 3:], action[..., 1:], -1).all()
    assert not np.asarray(traj.terminated).any()  # no invalid action reached the env
    # Training: the update re-applies the stored masks; returns rise to near 2 per step
    # (5-step episodes), with no invalid action (-10) ever sent.
    result = jax.jit(make_train(config))(jax.random.key(0))
    returns = np.asarray(result.metrics["episode_return"])
    assert np.isfinite(returns).all() and returns.min() >= 0.0
    assert returns[-1] > 9.0 and returns[-1] > returns[0] + 1.0, returns
    # Acting with the mask, sampled or deterministic, picks valid actions only.
    from purejaxppo import policy

    act = policy(config)
    obs, state = jax.vmap(Lock().reset)(jax.random.split(jax.random.key(5), 64))
    for kwargs in ({"key": jax.random.key(6)}, {"deterministic": True}):
        a = np.asarray(act(result.params, obs, action_mask=state.valid, **kwargs))
        valid = np.asarray(state.valid)
        assert valid[np.arange(64), a[:, 0]].all() and valid[np.arange(64), 3 + a[:, 1]].all()


def test_recurrent_policy_on_a_masked_multidiscrete_env_acts_per_factor(registered):
    """The GRU's policy is factorised like the MLP's: one valid value per factor, and it learns."""
    from purejaxppo import networks as netlib
    from purejaxppo import rollout

    registered("Lock-v1", Lock)
    env = envs.make("Lock-v1")
    config = PPOConfig(env="Lock-v1", total_timesteps=20 * 512, num_envs=8, num_steps=64,
                       num_minibatches=2, lr=3e-3, ent_coef=0.0, network="gru",
                       hidden_sizes=(32,))
    nets = netlib.make_networks(env, config)
    params = netlib.init_networks(jax.random.key(0), nets, env.obs_size)
    carry = rollout.init_env_carry(env, jax.random.key(1), 8, nets)
    _, traj, _ = rollout.collect(env, nets, params, carry, jax.random.key(2), 128, 0.99,
                                 False, False)
    mask, action = np.asarray(traj.action_mask), np.asarray(traj.action)
    assert action.shape == (128, 8, 2)
    assert np.take_along_axis(mask[..., :3], action[..., :1], -1).all()
    assert np.take_along_axis(mask[..., 3:], action[..., 1:], -1).all()
    result = jax.jit(make_train(config))(jax.random.key(0))
    returns = np.asarray(result.metrics["episode_return"])
    assert np.isfinite(returns).all() and returns.min() >= 0.0
    assert returns[-1] > returns[0] + 1.0, returns

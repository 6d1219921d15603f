"""Using a trained agent: load a run, act with its policy, evaluate it, render an episode.

    run = purejaxppo.load("runs/CartPole-v1-20260101-120000")
    act = purejaxppo.policy(run.config)
    action = act(run.params, obs, key)                      # a sample of pi(. | obs)
    action = act(run.params, obs, deterministic=True)       # the most likely action / the mean
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo import checkpoint
from purejaxppo import env as envlib
from purejaxppo import normalize as norm
from purejaxppo.config import PPOConfig
from purejaxppo.distributions import Categorical, DiagGaussian
from purejaxppo.experiment import read_run_settings, state_shapes
from purejaxppo.train import Agent, make_agent

Array = jax.Array


class Loaded(NamedTuple):
    """A trained agent read back from a run directory."""

    config: PPOConfig
    params: dict
    """``{"actor": ..., "critic": ...}``; with ``seed=None``, every leaf has a leading seed axis."""
    obs_stats: norm.RunningStats | None
    """Observation statistics the policy normalises with (None unless ``config.normalize_obs``)."""
    update: int
    """Updates done when the checkpoint was taken."""


def load(run_dir: str | Path, seed: int | None = 0) -> Loaded:
    """Reads the newest checkpoint of a ``purejaxppo train`` run.

    Args:
        run_dir: the run's output directory.
        seed: index of the seed to return (0 is the run's first seed), or None for all of them.

    Raises:
        ValueError: the directory, its config.json or its checkpoint is missing or corrupt.
    """
    config, options, _ = read_run_settings(run_dir)
    state, _, update = checkpoint.restore(run_dir, state_shapes(config, options))
    obs_stats = state.env.normalizer.obs if config.normalize_obs else None
    params = state.params
    if seed is not None:
        if not 0 <= seed < options.num_seeds:
            raise ValueError(f"seed index {seed} is out of range: the run has {options.num_seeds} "
                             "seeds")
        params, obs_stats = jax.tree.map(lambda x: x[seed], (params, obs_stats))
    return Loaded(config, params, obs_stats, update)


def _obs_shape(agent: Agent) -> tuple[int, ...]:
    return tuple(agent.spec.env.observation_space(agent.spec.params).shape)


def _make_act(config: PPOConfig) -> tuple[Agent, Callable[..., Array]]:
    """The agent, and ``act_flat(params, flat_obs [*batch, obs_size], key, deterministic,
    obs_stats)``: the policy on observations already flattened by :mod:`purejaxppo.env`."""
    agent = make_agent(config)
    spec = agent.spec

    def act_flat(params: dict, x: Array, key: Array | None, deterministic: bool,
                 obs_stats: norm.RunningStats | None) -> Array:
        if config.normalize_obs:
            if obs_stats is None:
                raise ValueError("this policy was trained with normalize_obs: pass "
                                 "obs_stats=load(run_dir).obs_stats")
            x = norm.normalize(obs_stats, x)
        dist = agent.actor.apply(params["actor"], x)
        if deterministic:
            action = dist.mode()
        elif key is None:
            raise ValueError("sampling an action needs a key; pass key= or deterministic=True")
        else:
            dist_cls = Categorical if spec.discrete else DiagGaussian
            action = dist.sample(dist_cls.noise(key, x.shape[:-1], spec.action_size))
        if not spec.discrete:
            action = jnp.clip(action, spec.action_low, spec.action_high)
        return action

    return agent, act_flat


def policy(config: PPOConfig) -> Callable[..., Array]:
    """``act(params, obs, key=None, *, deterministic=False, obs_stats=None) -> action``.

    A pure function, jit- and vmap-friendly. ``obs`` is a raw gymnax observation or a batch of
    them (leading axes); the action has the same leading axes. Sampled actions need a ``key``;
    ``deterministic=True`` returns the most likely action (Discrete) or the mean (Box). Box
    actions are clipped to the action space. A config with ``normalize_obs`` needs the training
    run's ``obs_stats`` (``load(...).obs_stats``).
    """
    agent, act_flat = _make_act(config)
    obs_shape = _obs_shape(agent)

    def act(params: dict, obs: Array, key: Array | None = None, *, deterministic: bool = False,
            obs_stats: norm.RunningStats | None = None) -> Array:
        obs = jnp.asarray(obs)
        batch = obs.shape[:obs.ndim - len(obs_shape)]
        x = jax.vmap(agent.spec.flatten)(obs.reshape(-1, *obs_shape)).reshape(
            *batch, agent.spec.obs_size)
        return act_flat(params, x, key, deterministic, obs_stats)

    return act


class Evaluation(NamedTuple):
    """Per-episode results ``[num_seeds, episodes]``."""

    returns: np.ndarray
    lengths: np.ndarray
    finished: np.ndarray
    """False where an episode was still running after ``max_steps`` (its return is partial)."""


def max_episode_steps(config: PPOConfig) -> int:
    """The environment's time limit (gymnax truncates every episode there)."""
    spec = make_agent(config).spec
    return int(getattr(spec.params, "max_steps_in_episode", 10_000))


def make_evaluate(config: PPOConfig, episodes: int, deterministic: bool,
                  max_steps: int | None = None) -> Callable[..., tuple[Array, Array, Array]]:
    """``evaluate(params, obs_stats, key) -> (returns, lengths, finished)``, each ``[episodes]``.

    One environment per episode, stepped together (vmap) in a ``lax.while_loop`` that stops when
    every episode has ended or after ``max_steps`` steps (default: the env's time limit).
    """
    agent, act_flat = _make_act(config)
    spec = agent.spec
    limit = max_steps or max_episode_steps(config)

    def evaluate(params: dict, obs_stats: Any, key: Array):
        k_reset, key = jax.random.split(key)
        obs, env_state = envlib.reset(spec, jax.random.split(k_reset, episodes))
        zeros = jnp.zeros((episodes,))
        done = jnp.zeros((episodes,), bool)

        def running(carry):
            t, *_, done = carry
            return (t < limit) & ~jnp.all(done)

        def step(carry):
            t, key, obs, env_state, ret, length, done = carry
            key, k_act, k_env = jax.random.split(key, 3)
            action = act_flat(params, obs, k_act, deterministic, obs_stats)
            obs, env_state, reward, terminated, truncated, _ = envlib.step(
                spec, jax.random.split(k_env, episodes), env_state, action)
            ret = ret + jnp.where(done, 0.0, reward)
            length = length + (~done).astype(jnp.int32)
            return t + 1, key, obs, env_state, ret, length, done | terminated | truncated

        carry = (0, key, obs, env_state, zeros, jnp.zeros((episodes,), jnp.int32), done)
        *_, ret, length, done = jax.lax.while_loop(running, step, carry)
        return ret, length, done

    return evaluate


def evaluate_loaded(loaded: Loaded, episodes: int = 100, deterministic: bool = False,
                    seed: int = 0, max_steps: int | None = None) -> Evaluation:
    """Evaluates the policy of every seed of ``load(run_dir, seed=None)`` in one jitted call."""
    evaluate = make_evaluate(loaded.config, episodes, deterministic, max_steps)
    num_seeds = jax.tree.leaves(loaded.params)[0].shape[0]
    keys = jax.random.split(jax.random.key(seed), num_seeds)
    obs_axis = None if loaded.obs_stats is None else 0
    ret, length, done = jax.jit(jax.vmap(evaluate, in_axes=(0, obs_axis, 0)))(
        loaded.params, loaded.obs_stats, keys)
    return Evaluation(np.asarray(ret), np.asarray(length), np.asarray(done))


VISUALIZED = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0",
              "MountainCarContinuous-v0", "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar",
              "Seaquest-MinAtar", "SpaceInvaders-MinAtar", "Catch-bsuite", "PointRobot-misc",
              "MetaMaze-misc", "FourRooms-misc", "Pong-misc")
"""Environments ``gymnax.visualize.Visualizer`` can draw."""
CLASSIC_CONTROL = VISUALIZED[:5]


def gif_requirements(env_id: str) -> str | None:
    """Why an episode of ``env_id`` cannot be rendered here (with the fix), or None if it can."""
    if env_id not in VISUALIZED:
        return (f"gymnax's Visualizer cannot draw {env_id}; it draws {', '.join(VISUALIZED)}. "
                "Drop --gif")
    if importlib.util.find_spec("PIL") is None:
        return "writing a GIF needs Pillow; pip install 'purejaxppo[render]' (or pillow)"
    if env_id in CLASSIC_CONTROL and importlib.util.find_spec("pygame") is None:
        return (f"rendering {env_id} needs gymnasium's classic-control renderer (pygame); "
                "pip install 'purejaxppo[render]' (or 'gymnasium[classic-control]')")
    return None


def render_gif(loaded: Loaded, path: str | Path, key: Array, deterministic: bool,
               max_steps: int | None = None) -> tuple[float, int]:
    """Plays one episode with seed 0's policy and saves it as a GIF; returns (return, length)."""
    import matplotlib

    matplotlib.use("Agg")
    from gymnax.visualize import Visualizer

    config = loaded.config
    agent, act_flat = _make_act(config)
    spec = agent.spec
    limit = max_steps or max_episode_steps(config)
    params, obs_stats = jax.tree.map(lambda x: x[0], (loaded.params, loaded.obs_stats))

    @jax.jit
    def play(key: Array):
        k_reset, key = jax.random.split(key)
        obs, env_state = envlib.reset(spec, k_reset[None])

        def step(carry, k):
            obs, env_state = carry
            k_act, k_env = jax.random.split(k)
            action = act_flat(params, obs, k_act, deterministic, obs_stats)
            obs2, env_state2, reward, terminated, truncated, _ = envlib.step(
                spec, k_env[None], env_state, action)
            return (obs2, env_state2), (env_state, reward[0], terminated[0] | truncated[0])

        _, (states, rewards, dones) = jax.lax.scan(step, (obs, env_state),
                                                   jax.random.split(key, limit))
        return states, rewards, dones

    states, rewards, dones = jax.device_get(play(key))
    dones = np.asarray(dones)
    length = int(np.argmax(dones)) + 1 if dones.any() else len(dones)
    frames = [jax.tree.map(lambda x, i=i: x[i, 0], states) for i in range(length)]
    cumulative = np.cumsum(np.asarray(rewards)[:length])
    Visualizer(spec.env, spec.params, frames, cumulative).animate(str(path))
    return float(cumulative[-1]), length

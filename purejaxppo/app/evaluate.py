"""A trained run read back from its directory: load it, evaluate it, render an episode.

    run = purejaxppo.load("runs/CartPole-v1-20260101-120000")
    act = purejaxppo.policy(run.config)                     # purejaxppo.acting
    action = act(run.params, obs, key)
    carry, action = act(run.params, carry, obs, key)        # a recurrent policy (gru, lstm)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from purejaxppo import networks as netlib
from purejaxppo import normalize as norm
from purejaxppo import rollout as rollout_lib
from purejaxppo.acting import make_act, make_evaluate
from purejaxppo.app import checkpoint
from purejaxppo.app.experiment import read_run_settings, state_shapes
from purejaxppo.config import PPOConfig
from purejaxppo.envs.core import Env, TimedState
from purejaxppo.envs.gymnax import GymnaxAdapter
from purejaxppo.evaluation import episode_limit
from purejaxppo.parallel import gather_runs, put_runs, seed_sharding
from purejaxppo.train import make_agent

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


def load(run_dir: str | Path, seed: int | None = 0, update: int | None = None) -> Loaded:
    """Reads the newest checkpoint of a ``purejaxppo train`` run.

    Args:
        run_dir: the run's output directory.
        seed: index of the seed to return (0 is the run's first seed), or None for all of them.
        update: the checkpoint taken after this many updates; the newest by default.

    Raises:
        ValueError: the directory, its config.json or its checkpoint is missing or corrupt.
    """
    config, options, _ = read_run_settings(run_dir)
    state, _, update = checkpoint.restore(run_dir, state_shapes(config, options), update)
    obs_stats = state.env_carry.normalizer.obs if config.normalize_obs else None
    params = state.params
    if seed is not None:
        if not 0 <= seed < options.num_seeds:
            raise ValueError(f"seed index {seed} is out of range: the run has {options.num_seeds} "
                             "seeds")
        params, obs_stats = jax.tree.map(lambda x: x[seed], (params, obs_stats))
    return Loaded(config=config, params=params, obs_stats=obs_stats, update=update)


class Evaluation(NamedTuple):
    """Per-episode results ``[num_seeds, episodes]``."""

    returns: np.ndarray
    lengths: np.ndarray
    finished: np.ndarray
    """False where an episode was still running after ``max_steps`` (its return is partial)."""


def evaluate_loaded(loaded: Loaded, episodes: int = 100, deterministic: bool = False,
                    seed: int = 0, max_steps: int | None = None) -> Evaluation:
    """Evaluates the policy of every seed of ``load(run_dir, seed=None)`` in one jitted call.

    With several processes (``jax.distributed``) every process calls it with the same run: the
    seeds are split over every process's devices and the results gathered on each.
    """
    evaluate = make_evaluate(loaded.config, episodes, deterministic, max_steps)
    num_seeds = jax.tree.leaves(loaded.params)[0].shape[0]
    keys = jax.random.split(jax.random.key(seed), num_seeds)
    obs_axis = None if loaded.obs_stats is None else 0
    inputs = (loaded.params, loaded.obs_stats, keys)
    if jax.process_count() > 1:
        inputs = put_runs(inputs, seed_sharding(num_seeds))
    out = jax.jit(jax.vmap(evaluate, in_axes=(0, obs_axis, 0)))(*inputs)
    ret, length, done = gather_runs(out)
    return Evaluation(np.asarray(ret), np.asarray(length), np.asarray(done))


VISUALIZED = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0",
              "MountainCarContinuous-v0", "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar",
              "Seaquest-MinAtar", "SpaceInvaders-MinAtar", "Catch-bsuite", "PointRobot-misc",
              "MetaMaze-misc", "FourRooms-misc", "Pong-misc")
"""Environments ``gymnax.visualize.Visualizer`` can draw."""
CLASSIC_CONTROL = VISUALIZED[:5]


MAX_GIF_FRAMES = 1000
"""The most steps a GIF shows (an episode of a suite env may last 10,000 steps or more)."""


def gif_requirements(env: Env) -> str | None:
    """Why an episode of ``env`` cannot be rendered here (with the fix), or None if it can.

    gymnax environments are drawn by gymnax's Visualizer; any other adapter with a
    ``render(states)`` method (Craftax, Jumanji, Navix, XLand-MiniGrid, or a registered one) by
    itself.
    """
    if importlib.util.find_spec("PIL") is None:
        return "writing a GIF needs Pillow; pip install 'purejaxppo[render]' (or pillow)"
    if not isinstance(env.adapter, GymnaxAdapter):
        if hasattr(env.adapter, "render"):
            return None
        return (f"{env.env_id} cannot be drawn: its adapter has no render(states) method "
                "(purejaxppo draws gymnax, craftax:, jumanji:, navix: and xminigrid: environments; Brax "
                "and Playground draw through MuJoCo's OpenGL renderer, which purejaxppo does not "
                "drive). Drop --gif (evaluation works without it)")
    env_id = env.env_id.removeprefix("gymnax:")
    if env_id not in VISUALIZED:
        return (f"gymnax's Visualizer cannot draw {env_id}; it draws {', '.join(VISUALIZED)}. "
                "Drop --gif")
    if env_id in CLASSIC_CONTROL and importlib.util.find_spec("pygame") is None:
        return (f"rendering {env_id} needs gymnasium's classic-control renderer (pygame); "
                "pip install 'purejaxppo[render]' (or 'gymnasium[classic-control]')")
    return None


def write_gif(path: str | Path, frames: np.ndarray, fps: int = 20) -> None:
    """``uint8[T, H, W, 3]`` frames as an animated GIF (Pillow), written atomically."""
    import io

    from PIL import Image

    from purejaxppo.app.outputs import atomic_write

    images = [Image.fromarray(f) for f in frames]
    data = io.BytesIO()
    images[0].save(data, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(1000 / fps), loop=0)
    atomic_write(path, data.getvalue())


def render_gif(loaded: Loaded, path: str | Path, key: Array, deterministic: bool,
               max_steps: int | None = None) -> tuple[float, int]:
    """Plays one episode with seed 0's policy and saves it as a GIF; returns (return, length).

    gymnax environments are drawn by gymnax's Visualizer, others by their adapter's
    ``render(states)`` (at most :data:`MAX_GIF_FRAMES` steps of the episode).
    """
    import os

    # Silence pygame's audio/video driver probing (classic-control renderers) before it loads.
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import matplotlib

    matplotlib.use("Agg")
    from gymnax.visualize import Visualizer

    agent = make_agent(loaded.config)
    act_flat = make_act(agent)
    env = agent.env
    problem = gif_requirements(env)
    if problem:
        raise ValueError(problem)
    drawn_by_adapter = not isinstance(env.adapter, GymnaxAdapter)
    limit = max_steps or episode_limit(env)
    if drawn_by_adapter:
        limit = min(limit, MAX_GIF_FRAMES)
    params, obs_stats = jax.tree.map(lambda x: x[0], (loaded.params, loaded.obs_stats))
    step_env = jax.vmap(env.step)

    @jax.jit
    def play(key: Array):
        k_reset, key = jax.random.split(key)
        obs, env_state = rollout_lib.reset_batch(env, k_reset[None])

        def step(carry, k):
            net_carry, obs, env_state = carry
            k_act, k_env = jax.random.split(k)
            mask = jax.vmap(env.action_mask)(env_state) if env.masked else None
            net_carry, action = act_flat(params, net_carry, obs, k_act, deterministic, obs_stats,
                                         mask)
            obs2, env_state2, reward, terminated, truncated, _ = step_env(k_env[None], env_state,
                                                                          action)
            return ((net_carry, obs2, env_state2),
                    (env_state, reward[0], terminated[0] | truncated[0]))

        net_carry = netlib.initial_carry(agent.nets, (1,))
        _, (states, rewards, dones) = jax.lax.scan(step, (net_carry, obs, env_state),
                                                   jax.random.split(key, limit))
        return states, rewards, dones

    states, rewards, dones = jax.device_get(play(key))
    dones = np.asarray(dones)
    length = int(np.argmax(dones)) + 1 if dones.any() else len(dones)
    cumulative = np.cumsum(np.asarray(rewards)[:length])
    states = jax.tree.map(lambda x: x[:length, 0], states)
    states = states.inner if isinstance(states, TimedState) else states  # the adapter's own
    if drawn_by_adapter:
        write_gif(path, env.adapter.render(states))
        return float(cumulative[-1]), length
    frames = [jax.tree.map(lambda x, i=i: x[i], states) for i in range(length)]
    if env.env_id.removeprefix("gymnax:") in CLASSIC_CONTROL:
        write_gif(path, classic_control_frames(env.adapter.env, env.adapter.params, frames))
    else:
        Visualizer(env.adapter.env, env.adapter.params, frames, cumulative).animate(str(path))
    return float(cumulative[-1]), length


def classic_control_frames(env: Any, params: Any, states: list) -> np.ndarray:
    """``uint8[T, H, W, 3]``: gymnasium's classic-control renderer drawing each gymnax state.

    One gymnasium environment draws every frame (its params copied once, its state set per
    frame, with gymnax's own mapping ``gymnax.visualize.vis_gym``), written straight to the GIF:
    gymnax's Visualizer makes a new gymnasium environment per frame and re-draws a matplotlib
    figure, about 0.2 s a frame.
    """
    import gymnasium
    from gymnax.visualize import vis_gym

    gym_env = gymnasium.make(env.name, render_mode="rgb_array")
    try:
        gym_env.reset(seed=0)
        raw = gym_env.unwrapped
        vis_gym.set_gym_params(raw, env.name, params)
        frames = []
        for state in states:
            raw.state = vis_gym.get_gym_state(state, env.name)
            if env.name == "Pendulum-v1":
                raw.last_u = np.asarray(state.last_u, dtype=np.float64)
            frames.append(np.asarray(gym_env.render(), np.uint8))
    finally:
        gym_env.close()
    return np.stack(frames)

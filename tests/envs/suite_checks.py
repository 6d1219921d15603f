"""Checks every suite's adapter passes (tests/envs/test_<suite>.py call them on the suite's envs).

A suite's tests skip only when its package is not installed at all (``conftest.require_suite``);
CI installs ``purejaxppo[envs]``, so there they all run, and an import error fails them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo import PPOConfig, envs, make_train, policy
from purejaxppo.acting import make_evaluate
from purejaxppo.envs import Env, spaces

SMALL = dict(total_timesteps=32, num_envs=2, num_steps=8, update_epochs=1, num_minibatches=1,
             hidden_sizes=(16,))
"""2 updates of 2 envs x 8 steps, one minibatch, 16 hidden units: a suite's env compiles once."""


def zero_action(env: Env, batch: tuple[int, ...] = ()) -> jax.Array:
    """A valid-shaped action (the first action / zeros) for ``batch`` environments."""
    if env.action_nvec:
        return jnp.zeros((*batch, len(env.action_nvec)), jnp.int32)
    if env.discrete:
        return jnp.zeros(batch, jnp.int32)
    return jnp.zeros((*batch, env.action_size), jnp.float32)


def check_reset_and_step(env_id: str, action_space: spaces.Space
                         ) -> tuple[Env, list[Any], Callable[..., Any]]:
    """``make`` maps the spaces; ``reset``/``step`` run under ``jit`` and ``vmap`` with flat
    float32 observations, float32 rewards and bool flags. Returns the env, its 3 resets,
    unbatched (``(obs, state)`` each), and a ``step(key, state, action)`` of one env that runs
    the program already compiled here, for the checks that follow."""
    env = envs.make(env_id)
    assert env.action_space == action_space, env.action_space
    keys = jax.random.split(jax.random.key(0), 3)
    obs, state = jax.jit(jax.vmap(env.reset))(keys)
    assert obs.shape == (3, env.obs_size) and obs.dtype == jnp.float32
    assert np.isfinite(np.asarray(obs)).all()
    step3 = jax.jit(jax.vmap(env.step))
    out = step3(keys, state, zero_action(env, (3,)))
    next_obs, _, reward, terminated, truncated, final_obs = out
    assert next_obs.shape == final_obs.shape == (3, env.obs_size)
    assert reward.dtype == jnp.float32 and reward.shape == (3,)
    assert terminated.dtype == truncated.dtype == jnp.bool_
    resets = [jax.tree.map(lambda x, i=i: x[i], (obs, state)) for i in range(3)]

    def step(key: jax.Array, one_state: Any, action: jax.Array) -> Any:
        # Strongly typed (a Python int's weak type would retrace and recompile the env's step).
        three = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x, jnp.asarray(x).dtype)] * 3),
                             (one_state, action))
        return jax.tree.map(lambda x: x[0], step3(jnp.stack([key] * 3), *three))

    return env, resets, step


def check_truncation_keeps_final_obs(env: Env, at_limit: Any, reset: Any,
                                     action: jax.Array | None = None) -> None:
    """A state one step before the time limit: the step truncates (not terminates), ``final_obs``
    is the adapter's own next observation, the returned one the pre-drawn ``reset``'s (another
    episode's ``(obs, state)`` than ``at_limit``'s)."""
    action = zero_action(env) if action is None else action
    key = jax.random.key(3)
    inner = at_limit.inner if env.time_limit is not None else at_limit

    @jax.jit
    def step_and_transition():  # one program: the step, and the adapter's own transition
        return env.step(key, at_limit, action, reset), env.adapter.transition(key, inner, action)

    (obs, _, _, terminated, truncated, final_obs), transition = step_and_transition()
    want = env.flatten(transition[0])
    assert bool(truncated) and not bool(terminated)
    np.testing.assert_array_equal(final_obs, want)
    np.testing.assert_array_equal(obs, reset[0])
    assert not np.array_equal(final_obs, reset[0])  # the reset did not overwrite it


def at_protocol_limit(env: Env, state: Any) -> Any:
    """``state`` with :class:`Env`'s own step counter one short of its time limit."""
    assert env.time_limit is not None
    return state._replace(steps=jnp.asarray(env.time_limit - 1, jnp.int32))


def check_trains_and_evaluates(env_id: str, **overrides: Any) -> None:
    """Two vmapped seeds train (finite metrics); evaluation and the policy act on the result."""
    config = PPOConfig(env=env_id, **{**SMALL, **overrides})
    result = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.key(0), 2))
    for name, values in result.metrics.items():
        if name != "episode_return" and name != "episode_length":  # NaN until an episode ends
            assert np.isfinite(np.asarray(values)).all(), name
    params = jax.tree.map(lambda x: x[0], result.params)
    evaluate = jax.jit(make_evaluate(config, episodes=2, deterministic=True, max_steps=5))
    returns, lengths, _ = evaluate(params, None, jax.random.key(1))
    assert np.isfinite(np.asarray(returns)).all() and (np.asarray(lengths) >= 1).all()
    env = envs.make(env_id)

    @jax.jit
    def raw_reset(key):  # the adapter's own observation and mask, as a user's code sees them
        raw_obs, state = env.adapter.reset(key)
        return raw_obs, env.adapter.action_mask(state) if env.masked else None

    raw_obs, mask = raw_reset(jax.random.key(2))
    action = policy(config)(params, raw_obs, jax.random.key(3), action_mask=mask)
    assert action.shape == zero_action(env).shape
    check_gif(config, result.params, env)


def check_gif(config: PPOConfig, params: Any, env: Env) -> None:
    """``eval --gif``: an adapter with ``render`` draws every step of an episode (cut at 12
    steps) into a GIF of its frames; one without it gets the one-line reason."""
    from PIL import Image

    from purejaxppo.app import evaluate as app_evaluate

    problem = app_evaluate.gif_requirements(env)
    if not hasattr(env.adapter, "render"):
        assert problem is not None and "has no render(states) method" in problem, problem
        return
    assert problem is None, problem
    loaded = app_evaluate.Loaded(config=config, params=params, obs_stats=None, update=2)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "episode.gif"
        ret, length = app_evaluate.render_gif(loaded, path, jax.random.key(4), True, max_steps=12)
        assert np.isfinite(ret) and 1 <= length <= 12
        with Image.open(path) as gif:
            # Pillow merges a frame equal to the one before into it, adding up their durations.
            durations = []
            for i in range(gif.n_frames):
                gif.seek(i)
                durations.append(gif.info["duration"])
            assert sum(durations) == length * 50, durations
            width, height = gif.size
            last = np.asarray(gif.convert("RGB"))
    assert width >= 32 and height >= 32 and last.std() > 0  # a drawing, not a blank frame

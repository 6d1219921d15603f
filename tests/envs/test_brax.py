"""brax: adapter (purejaxppo.envs.brax)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import jax
import pytest
from conftest import require_suite
from suite_checks import (
    at_protocol_limit,
    check_reset_and_step,
    check_trains_and_evaluates,
    check_truncation_keeps_final_obs,
)

from purejaxppo import PPOConfig, envs, make_train
from purejaxppo.envs import brax as brax_adapter
from purejaxppo.envs import spaces, suites

# An optional extra: not installed (`pip install -e ".[test]"`), these tests are skipped with this
# reason; installed (`pip install -e ".[test,envs]"`) but failing to import, they fail.
require_suite("brax", "brax")


def test_brax_inverted_pendulum_steps_truncates_with_its_final_obs_and_trains():
    env, resets, _ = check_reset_and_step("brax:inverted_pendulum@spring", spaces.Box.of((1,), -1.0, 1.0))
    assert env.time_limit == 1000 and env.obs_size == 4 and not env.masked
    _, state = resets[0]
    check_truncation_keeps_final_obs(env, at_protocol_limit(env, state), resets[1])
    check_trains_and_evaluates("brax:inverted_pendulum@spring")


def test_brax_names_and_backends_are_checked():
    with pytest.raises(ValueError, match=r"unknown brax environment 'antt'\. Did you mean 'brax:ant'"):
        envs.make("brax:antt")
    with pytest.raises(ValueError, match="unknown Brax backend 'nope'.*positional, spring"):
        envs.make("brax:ant@nope")
    assert envs.make("brax:ant").adapter.env.backend == "positional"
    # Swimmer runs on generalized only: positional by name is refused, naming the one it takes;
    # without a backend it gets that one, and it traces through training, or, where Brax's
    # fluid forces do not run on this jax, it is refused with that reason.
    with pytest.raises(ValueError, match=r"brax:swimmer does not run on the 'positional' "
                                         r"backend.*give brax:swimmer@generalized"):
        envs.make("brax:swimmer@positional")
    from brax import envs as brax_envs

    assert brax_adapter._own_backend(brax_envs._envs["swimmer"]) == "generalized"
    if brax_adapter._fluid_is_broken():
        with pytest.raises(ValueError, match=r"'brax:swimmer' is not supported with jax .*"
                                             r"jnp.clip\(a_min=...\)"):
            envs.make("brax:swimmer")
    else:
        assert envs.make("brax:swimmer").adapter.env.backend == "generalized"
        config = PPOConfig(env="brax:swimmer", total_timesteps=64, num_envs=2, num_steps=16)
        jax.eval_shape(make_train(config), jax.random.key(0))


LOAD_HALFCHEETAH = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from purejaxppo import envs
    env = envs.make("brax:halfcheetah")
    again = envs.make("brax:halfcheetah")
print(json.dumps({"messages": [str(w.message) for w in caught],
                  "categories": [w.category.__name__ for w in caught], "same": env is again}))
"""


def test_loading_a_brax_model_prints_nothing_and_writes_no_mujoco_log(tmp_path):
    """In a fresh interpreter (Brax's notice comes once, on its first import), in an empty
    directory: making ``brax:halfcheetah`` (whose model MuJoCo's compiler warns about) prints
    nothing (MuJoCo's default prints its warnings) and leaves no ``MUJOCO_LOG.TXT``; MuJoCo's
    messages come as Python warnings, each once, and Brax's notice about its own maintenance is
    left out. The second make is the same
    object (suite environments are made once per process)."""
    proc = subprocess.run([sys.executable, "-c", LOAD_HALFCHEETAH], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    assert "WARNING" not in proc.stderr, proc.stderr  # MuJoCo's own print goes there
    assert list(tmp_path.iterdir()) == []
    result = json.loads(lines[0])
    assert result["same"]
    messages = result["messages"]
    assert not any(m.startswith(brax_adapter.NOTICE) for m in messages), messages
    mujoco_messages = [m for m in messages if m.startswith("MuJoCo: ")]
    assert len(mujoco_messages) == len(set(mujoco_messages)), mujoco_messages


def test_physics_loading_turns_mujoco_warnings_into_python_warnings_once():
    """The handler installed while loading collects MuJoCo's messages; on exit they are Python
    warnings, once each (a deprecation as a DeprecationWarning), and MuJoCo's previous handler
    is back. A notice named to it is not raised."""
    import mujoco

    before = mujoco.get_mju_user_warning()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with suites.physics_loading("A notice about the suite"):
            handler = mujoco.get_mju_user_warning()
            assert handler is not None and handler is not before
            handler("attribute 'x' is deprecated")
            handler("attribute 'x' is deprecated")
            handler("Nan in qacc")
            warnings.warn("A notice about the suite, ignored", UserWarning, stacklevel=1)
            warnings.warn("another warning", UserWarning, stacklevel=1)
    assert mujoco.get_mju_user_warning() is before
    got = [(w.category, str(w.message)) for w in caught]
    assert got == [(UserWarning, "another warning"),
                   (DeprecationWarning, "MuJoCo: attribute 'x' is deprecated"),
                   (UserWarning, "MuJoCo: Nan in qacc")], got

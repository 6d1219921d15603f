"""brax: adapter (purejaxppo.envs.brax)."""

from __future__ import annotations

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
from purejaxppo.envs import spaces

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

"""Environment suites: the id prefixes ``brax:``, ``playground:``, ``jumanji:``, ``craftax:``,
``navix:`` and ``xminigrid:``, each an adapter module of its own and an optional extra.

    envs.make("brax:ant")                       # pip install 'purejaxppo[brax]'
    envs.make("jumanji:Snake-v1")               # pip install 'purejaxppo[jumanji]'

Every suite's adapter leaves auto-reset to :class:`purejaxppo.envs.core.Env`, so ``final_obs`` is
the real last observation of a time-limited episode on every suite (Brax's and Playground's own
auto-reset wrappers overwrite it), and ``terminated`` stays apart from ``truncated``.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Suite(NamedTuple):
    """One suite: where its adapter lives and what it needs."""

    module: str
    """The adapter module under ``purejaxppo.envs``."""
    package: str
    """The package to import (what the extra installs)."""
    extra: str
    """``pip install 'purejaxppo[extra]'``."""
    example: str
    """An id to show in messages."""


SUITES: dict[str, Suite] = {
    "brax": Suite("brax", "brax", "brax", "brax:ant"),
    "playground": Suite("playground", "mujoco_playground", "playground",
                        "playground:CartpoleBalance"),
    "jumanji": Suite("jumanji", "jumanji", "jumanji", "jumanji:Snake-v1"),
    "craftax": Suite("craftax", "craftax", "craftax", "craftax:Craftax-Classic-Symbolic-v1"),
    "navix": Suite("navix", "navix", "navix", "navix:Navix-Empty-5x5-v0"),
    "xminigrid": Suite("xminigrid", "xminigrid", "xminigrid", "xminigrid:MiniGrid-Empty-5x5"),
}


def split_id(env_id: str) -> tuple[str, str] | None:
    """``("brax", "ant")`` for ``"brax:ant"``; None for an id without a ``prefix:``."""
    prefix, sep, name = env_id.partition(":")
    return (prefix, name) if sep else None


def require(prefix: str) -> Any:
    """Imports a suite's package.

    Raises:
        ValueError: one line naming the package and the exact ``pip install`` when it is missing.
    """
    suite = SUITES[prefix]
    try:
        return importlib.import_module(suite.package)
    except ImportError as err:
        raise ValueError(f"{prefix}: environments need the {suite.package} package ({err}); "
                         f"install it with: pip install 'purejaxppo[{suite.extra}]'") from None


def adapter_module(prefix: str) -> Any:
    """The adapter module of a suite prefix (its package imported and checked first).

    Raises:
        ValueError: an unknown prefix (with the close ones), or a missing package.
    """
    if prefix not in SUITES:
        close = difflib.get_close_matches(prefix, list(SUITES), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c + ':') for c in close)}?" if close else ""
        raise ValueError(f"unknown environment suite {prefix + ':'!r}.{hint} Suites: "
                         f"{', '.join(p + ':' for p in ['gymnax', *SUITES])}")
    require(prefix)
    return importlib.import_module(f"purejaxppo.envs.{SUITES[prefix].module}")


def unknown_name(prefix: str, name: str, known: list[str], extra: str = "") -> ValueError:
    """The error for a name a suite does not have: its close names, and a few of the others."""
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(f'{prefix}:{c}') for c in close)}?" if close else ""
    shown = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
    return ValueError(f"unknown {prefix} environment {name!r}.{hint} {prefix} environments: "
                      f"{shown}{extra}")


@contextlib.contextmanager
def physics_loading(*notices: str) -> Iterator[None]:
    """The context in which a MuJoCo-based suite imports its modules and compiles its models.

    * MuJoCo's own warnings (its model compiler's, e.g. a deprecated XML attribute in a model a
      suite ships) are, by MuJoCo's default, printed (to stderr) and appended to a
      ``MUJOCO_LOG.TXT`` in the working directory. Here they are collected instead and issued
      afterwards as Python warnings, ``"MuJoCo: MESSAGE"``, once each: a ``DeprecationWarning``
      for a deprecation (Python shows those to the code's developers, not its users), a
      ``UserWarning`` otherwise. MuJoCo's previous handler is restored on exit.
    * Python warnings whose message starts with one of ``notices`` are ignored (a suite's notice
      about itself that says nothing about the run, e.g. Brax's that it is no longer actively
      maintained).

    Without the ``mujoco`` package only the second applies.
    """
    try:
        import mujoco
    except ImportError:
        mujoco = None
    messages: list[str] = []
    previous = mujoco.get_mju_user_warning() if mujoco is not None else None
    with warnings.catch_warnings():
        for notice in notices:
            warnings.filterwarnings("ignore", message=re.escape(notice))
        if mujoco is not None:
            mujoco.set_mju_user_warning(messages.append)
        try:
            yield
        finally:
            if mujoco is not None:
                mujoco.set_mju_user_warning(previous)
    for message in dict.fromkeys(m.strip() for m in messages):
        category = DeprecationWarning if "deprecated" in message else UserWarning
        warnings.warn(f"MuJoCo: {message}", category, stacklevel=3)


def _parts(obs: Any, drop: tuple[str, ...]) -> list[Any]:
    """The array parts of an observation pytree, in the order :func:`flat_concat` joins them."""
    if hasattr(obs, "_asdict"):
        obs = obs._asdict()
    elif hasattr(obs, "__dataclass_fields__"):
        obs = {f: getattr(obs, f) for f in obs.__dataclass_fields__}
    if isinstance(obs, dict):
        obs = {k: v for k, v in obs.items() if k not in drop}
    return jax.tree.leaves(obs)


def flat_concat(obs: Any, drop: tuple[str, ...] = ("action_mask",)) -> Array:
    """An observation pytree (arrays, dicts, NamedTuples, dataclasses) as one float32 vector:
    every array part flattened in C order and concatenated, the fields of a dict or NamedTuple
    sorted by name (as ``jax.tree`` orders a dict; ``observation_parts`` follows the same order),
    the fields named in ``drop`` left out."""
    return jnp.concatenate([jnp.reshape(x, (-1,)).astype(jnp.float32)
                            for x in _parts(obs, drop)])


def flat_parts(obs: Any, drop: tuple[str, ...] = ("action_mask",)) -> tuple[tuple[int, ...], ...]:
    """The shapes of the parts :func:`flat_concat` joins, in its order (``obs`` may hold
    ``jax.ShapeDtypeStruct`` leaves, e.g. from ``jax.eval_shape``): the layout of its vector."""
    return tuple(tuple(int(d) for d in x.shape) for x in _parts(obs, drop))


def flat_size(reset: Callable[[Array], tuple[Any, Any]]) -> int:
    """Length of the flat observation an adapter's ``reset`` returns (traced, not run)."""
    obs, _ = jax.eval_shape(reset, jax.random.key(0))
    return int(obs.shape[0])

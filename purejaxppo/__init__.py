"""purejaxppo: PPO and its relatives in pure JAX, one jitted call from rollout to update.

Public API::

    from purejaxppo import PPOConfig, make_train, losses
    from purejaxppo import sweep, make_train_data_parallel   # many runs / many devices
    from purejaxppo import random_search, pbt                # hyperparameter search in-program
    from purejaxppo import envs, networks                    # your own environments and networks
    from purejaxppo import gradient_agreement                # do the losses' gradients agree?
    from purejaxppo import policy, load                      # act with a trained policy
    from purejaxppo import initial_carry                     # a recurrent policy's start

Names are imported on first use (PEP 562), so ``import purejaxppo`` is instant and the command
line answers ``--help`` without loading JAX. The library never imports the command-line
application (:mod:`purejaxppo.app`); ``load``, which reads a run directory the application wrote,
comes from there.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "POLICY_LOSSES": "purejaxppo.losses",
    "get_policy_loss": "purejaxppo.losses",
    "GradientAgreement": "purejaxppo.analysis",
    "gradient_agreement": "purejaxppo.analysis",
    "Hyperparams": "purejaxppo.config",
    "PPOConfig": "purejaxppo.config",
    "Networks": "purejaxppo.networks",
    "make_train_data_parallel": "purejaxppo.parallel",
    "SweepResult": "purejaxppo.sweeps",
    "sweep": "purejaxppo.sweeps",
    "PBTResult": "purejaxppo.search",
    "RandomSearchResult": "purejaxppo.search",
    "pbt": "purejaxppo.search",
    "random_search": "purejaxppo.search",
    "TrainResult": "purejaxppo.train",
    "TrainState": "purejaxppo.train",
    "make_init": "purejaxppo.train",
    "make_run": "purejaxppo.train",
    "make_train": "purejaxppo.train",
    "make_update": "purejaxppo.train",
    "policy": "purejaxppo.acting",
    "initial_carry": "purejaxppo.acting",
    "load": "purejaxppo.app.evaluate",
    "Loaded": "purejaxppo.app.evaluate",
}
_SUBMODULES = ("envs", "losses", "metrics", "networks")

if TYPE_CHECKING:  # for type checkers and editors; nothing is imported at run time
    from purejaxppo import envs, losses, metrics, networks  # noqa: F401
    from purejaxppo.acting import policy  # noqa: F401
    from purejaxppo.analysis import GradientAgreement, gradient_agreement  # noqa: F401
    from purejaxppo.config import Hyperparams, PPOConfig  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"purejaxppo.{name}")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'purejaxppo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])


__all__ = sorted([*_EXPORTS, *_SUBMODULES])

"""purejaxppo: PPO and its relatives in pure JAX, one jitted call from rollout to update.

Public API::

    from purejaxppo import PPOConfig, make_train, losses
    from purejaxppo import sweep, make_train_data_parallel   # many runs / many devices
    from purejaxppo import envs, networks                    # your own environments and networks
    from purejaxppo import gradient_agreement                # do the losses' gradients agree?
    from purejaxppo import policy, load                      # act with a trained policy
    from purejaxppo import initial_carry                     # a recurrent policy's start

The library never imports the command-line application (:mod:`purejaxppo.app`); ``load``, which
reads a run directory the application wrote, is imported from there on first use.
"""

from typing import Any

from purejaxppo import envs, losses, metrics, networks
from purejaxppo.acting import initial_carry, policy
from purejaxppo.analysis import GradientAgreement, gradient_agreement
from purejaxppo.config import Hyperparams, PPOConfig
from purejaxppo.losses import POLICY_LOSSES, get_policy_loss
from purejaxppo.networks import Networks
from purejaxppo.parallel import make_train_data_parallel
from purejaxppo.sweeps import SweepResult, sweep
from purejaxppo.train import TrainResult, TrainState, make_init, make_run, make_train, make_update

__version__ = "0.1.0"

_LAZY = {"load": "purejaxppo.app.evaluate", "Loaded": "purejaxppo.app.evaluate"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'purejaxppo' has no attribute {name!r}")


__all__ = [
    "POLICY_LOSSES",
    "GradientAgreement",
    "Hyperparams",
    "Loaded",
    "Networks",
    "PPOConfig",
    "SweepResult",
    "TrainResult",
    "TrainState",
    "envs",
    "get_policy_loss",
    "gradient_agreement",
    "initial_carry",
    "load",
    "losses",
    "make_init",
    "make_run",
    "make_train",
    "make_train_data_parallel",
    "make_update",
    "metrics",
    "networks",
    "policy",
    "sweep",
]

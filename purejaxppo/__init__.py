"""purejaxppo: PPO and its relatives in pure JAX, one jitted call from rollout to update.

Public API::

    from purejaxppo import PPOConfig, make_train, losses
    from purejaxppo import sweep, make_train_data_parallel   # many runs / many devices
    from purejaxppo import gradient_agreement                # do the losses' gradients agree?
"""

from purejaxppo import losses
from purejaxppo.analysis import GradientAgreement, gradient_agreement
from purejaxppo.config import Hyperparams, PPOConfig
from purejaxppo.evaluate import Loaded, load, policy
from purejaxppo.losses import POLICY_LOSSES, get_policy_loss
from purejaxppo.parallel import make_train_data_parallel
from purejaxppo.sweeps import SweepResult, sweep
from purejaxppo.train import TrainResult, TrainState, make_init, make_run, make_train, make_update

__version__ = "0.1.0"

__all__ = [
    "POLICY_LOSSES",
    "GradientAgreement",
    "Hyperparams",
    "Loaded",
    "PPOConfig",
    "SweepResult",
    "TrainResult",
    "TrainState",
    "get_policy_loss",
    "gradient_agreement",
    "load",
    "losses",
    "make_init",
    "make_run",
    "make_train",
    "make_train_data_parallel",
    "make_update",
    "policy",
    "sweep",
]

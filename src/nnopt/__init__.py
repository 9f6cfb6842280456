"""nnopt: a lab for TIG's neural-network optimizer challenge."""

from nnopt.api import (
    ChallengeOptimizer,
    HookError,
    OptimizerSetup,
    StepContext,
    check_optimizer,
)
from nnopt.data import PROFILES, Instance, Profile, generate_instance, get_profile
from nnopt.loop import EpochRecord, LoopSettings, TrainResult, train
from nnopt.model import MLP, TensorInfo
from nnopt.optimizers import (
    OptimizerSpec,
    TorchOptimizer,
    list_optimizers,
    load_optimizer,
    register,
)
from nnopt.runner import RunConfig, RunResult, run_challenge
from nnopt.scoring import TRACKS, Difficulty, Score, score
from nnopt.seeds import Seed, parse_seed

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "PROFILES",
    "TRACKS",
    "ChallengeOptimizer",
    "Difficulty",
    "EpochRecord",
    "HookError",
    "Instance",
    "LoopSettings",
    "OptimizerSetup",
    "OptimizerSpec",
    "Profile",
    "RunConfig",
    "RunResult",
    "Score",
    "Seed",
    "StepContext",
    "TensorInfo",
    "TorchOptimizer",
    "TrainResult",
    "__version__",
    "check_optimizer",
    "generate_instance",
    "get_profile",
    "list_optimizers",
    "load_optimizer",
    "parse_seed",
    "register",
    "run_challenge",
    "score",
    "train",
]

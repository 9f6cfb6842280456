"""Optimizers: the registry, the torch.optim adapter, the template, baselines."""

from nnopt.optimizers.registry import (
    OptimizerEntry,
    OptimizerSpec,
    list_optimizers,
    load_optimizer,
    parse_spec,
    register,
)
from nnopt.optimizers.template import TemplateOptimizer
from nnopt.optimizers.torch_adapter import TorchOptimizer

__all__ = [
    "OptimizerEntry",
    "OptimizerSpec",
    "TemplateOptimizer",
    "TorchOptimizer",
    "list_optimizers",
    "load_optimizer",
    "parse_spec",
    "register",
]

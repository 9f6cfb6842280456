"""The optimizers that ship with nnopt, registered by name.

Learning rates are for the harness's gradient, that of the summed squared
error over a batch (about 256 times the mean-loss gradient). Adam-type
methods are invariant to that scale; SGD is not.
"""

from __future__ import annotations

from typing import Any

import torch

from nnopt.optimizers import extras  # noqa: F401  (registers the optional extras)
from nnopt.optimizers.ours import Crest
from nnopt.optimizers.registry import register
from nnopt.optimizers.template import TemplateOptimizer
from nnopt.optimizers.torch_adapter import TorchOptimizer


def _fast(kw: dict[str, Any]) -> dict[str, Any]:
    """Prefer the fused kernels: torch's per-tensor default is 3x slower on CPU."""
    if "foreach" not in kw:
        kw.setdefault("fused", True)
    return kw


def _sgd(lr: float = 1e-4, momentum: float = 0.9, **kw: Any) -> TorchOptimizer:
    return TorchOptimizer(torch.optim.SGD, lr=lr, momentum=momentum, **_fast(kw))


def _betas(kw: dict[str, Any]) -> dict[str, Any]:
    """Accept beta1=/beta2= on the command line in place of betas=(..)."""
    if "beta1" in kw or "beta2" in kw:
        b1 = kw.pop("beta1", 0.9)
        b2 = kw.pop("beta2", 0.999)
        kw["betas"] = (b1, b2)
    elif isinstance(kw.get("betas"), list):
        kw["betas"] = tuple(kw["betas"])
    return kw


def _adam(lr: float = 1e-3, **kw: Any) -> TorchOptimizer:
    return TorchOptimizer(torch.optim.Adam, lr=lr, **_fast(_betas(kw)))


def _adamw(lr: float = 1e-3, weight_decay: float = 1e-2, **kw: Any) -> TorchOptimizer:
    return TorchOptimizer(
        torch.optim.AdamW, lr=lr, weight_decay=weight_decay, **_fast(_betas(kw))
    )


register("template", TemplateOptimizer, "SGD with momentum, the annotated template")
register("sgd", _sgd, "torch.optim.SGD, momentum 0.9, lr 1e-4 (summed-gradient scale)")
register("adam", _adam, "torch.optim.Adam, lr 1e-3")
register("adamw", _adamw, "torch.optim.AdamW, lr 1e-3, weight decay 1e-2")
register(
    "crest",
    Crest,
    "ours: schedule-free averaged Adam, kink spreading, warmup, plateau decay",
)

"""Run any ``torch.optim.Optimizer`` as a challenge optimizer.

The adapter keeps a shadow copy of the trainable tensors, hands the harness's
gradients to the torch optimizer as ``.grad``, lets it step the shadow, and
returns the difference as the additive update. The shadow is re-synced with
the harness's parameters before every step, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nnopt.api import OptimizerSetup, StepContext
from nnopt.model import TensorInfo

__all__ = ["TorchOptimizer", "TorchState"]

ParamGroupsFn = Callable[[list[TensorInfo], list[torch.Tensor]], list[dict[str, Any]]]


@dataclass
class TorchState:
    optimizer: torch.optim.Optimizer
    indices: list[int]  # flat-list index of each shadow tensor
    shadow: list[torch.Tensor]
    n_tensors: int


class TorchOptimizer:
    """Adapts ``optimizer_class(params, **hparams)`` to the challenge hooks.

    ``param_groups``, if given, maps the trainable tensors' infos and shadow
    tensors to torch parameter groups (for per-role settings, such as Muon on
    hidden matrices and AdamW on the rest).
    """

    def __init__(
        self,
        optimizer_class: type[torch.optim.Optimizer],
        *,
        param_groups: ParamGroupsFn | None = None,
        **hparams: Any,
    ) -> None:
        if not (
            isinstance(optimizer_class, type)
            and issubclass(optimizer_class, torch.optim.Optimizer)
        ):
            raise TypeError(
                f"expected a torch.optim.Optimizer subclass, got {optimizer_class!r}"
            )
        self.optimizer_class = optimizer_class
        self.param_groups = param_groups
        self.hparams = hparams
        # Fail on bad hyperparameters now, not at the first step.
        probe = torch.zeros(2, 2, requires_grad=True)
        optimizer_class([probe], **hparams)

    def init_state(self, setup: OptimizerSetup) -> TorchState:
        infos = [t for t in setup.tensors if t.trainable]
        shadow = [torch.zeros(t.shape, device=setup.device) for t in infos]
        groups: Any = self.param_groups(infos, shadow) if self.param_groups else shadow
        return TorchState(
            optimizer=self.optimizer_class(groups, **self.hparams),
            indices=[t.index for t in infos],
            shadow=shadow,
            n_tensors=len(setup.tensors),
        )

    def step(
        self,
        state: TorchState,
        params: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor],
        ctx: StepContext,
    ) -> list[torch.Tensor | None]:
        current = [params[i] for i in state.indices]
        with torch.no_grad():
            torch._foreach_copy_(state.shadow, current)
        for p, i in zip(state.shadow, state.indices):
            p.grad = grads[i]
        state.optimizer.step()
        with torch.no_grad():
            deltas = torch._foreach_sub(state.shadow, current)
        updates: list[torch.Tensor | None] = [None] * state.n_tensors
        for i, d in zip(state.indices, deltas):
            updates[i] = d
        return updates

"""Run any ``torch.optim.Optimizer`` as a challenge optimizer.

The adapter keeps a shadow copy of the trainable tensors, hands the harness's
gradients to the torch optimizer as ``.grad``, lets it step the shadow, and
returns the difference as the additive update. The shadow is re-synced with
the harness's parameters before every step, so the two cannot drift apart.

Batched mode (see ``docs/batched.md``) stacks B instances along a leading
dimension. That is exact only for element-wise optimizers, whose update of
each element depends on that element's history alone (and on the step count,
which all instances share). The adapter allows it for the torch optimizers
listed in ``ELEMENTWISE_OPTIMIZERS``, and for any other class only if the
caller vouches for it with ``elementwise=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nnopt.api import OptimizerSetup, StepContext
from nnopt.model import TensorInfo

__all__ = ["ELEMENTWISE_OPTIMIZERS", "TorchOptimizer", "TorchState"]

ParamGroupsFn = Callable[[list[TensorInfo], list[torch.Tensor]], list[dict[str, Any]]]

# Exact classes (not subclasses) whose update is element-wise, so stepping
# stacked instances equals stepping each alone; tests/test_batched.py checks
# each one. Not here, for example: Adafactor (factored second moments), LBFGS
# (line search over the whole vector), and any optimizer using norms.
ELEMENTWISE_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
)


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

    ``elementwise`` opts in to batched mode: None (the default) allows it for
    the classes in ``ELEMENTWISE_OPTIMIZERS``; True vouches that another class
    is element-wise too; False refuses it.
    """

    def __init__(
        self,
        optimizer_class: type[torch.optim.Optimizer],
        *,
        param_groups: ParamGroupsFn | None = None,
        elementwise: bool | None = None,
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
        if elementwise is None:
            elementwise = optimizer_class in ELEMENTWISE_OPTIMIZERS
        # Read by the batched engine (nnopt.batched): stacked instances may
        # share this optimizer only if its update is element-wise.
        self.supports_batched = bool(elementwise)
        # Fail on bad hyperparameters now, not at the first step.
        probe = torch.zeros(2, 2, requires_grad=True)
        optimizer_class([probe], **hparams)

    def init_state(self, setup: OptimizerSetup) -> TorchState:
        infos = [t for t in setup.tensors if t.trainable]
        # In batched mode each shadow tensor is the stack of all instances'.
        shadow = [
            torch.zeros(setup.tensor_shape(t), device=setup.device) for t in infos
        ]
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

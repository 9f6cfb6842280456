"""The template optimizer: plain SGD with momentum, every hook spelled out.

Copy this file to start your own optimizer. It shows the three hooks, where
state lives, how to tell trainable tensors from frozen ones, and the gradient
scale the harness uses. Run it with ``nnopt run --optimizer path/to/file.py``.

Update rule, for every trainable tensor ``p`` with gradient ``g``::

    m <- momentum * m + g
    update = -lr * m

It also runs in batched mode (``docs/batched.md``), where the engine trains B
instances at once: it says so with ``supports_batched = True``, and every
tensor then carries a leading instance dimension of size B. The rule above is
element-wise, so the same code serves both modes; only the buffers' shape
(``setup.tensor_shape``) differs. The losses in ``ctx`` are floats in one
mode and tuples of B floats in the other (``docs/batched.md`` shows how to
use them per instance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nnopt.api import BatchedStepContext, OptimizerSetup, StepContext

__all__ = ["TemplateOptimizer", "TemplateState"]


@dataclass
class TemplateState:
    """Everything the optimizer remembers between steps."""

    trainable: list[bool]  # per tensor: does the harness apply its update?
    momentum: list[torch.Tensor | None]  # per tensor: the momentum buffer


class TemplateOptimizer:
    """SGD with heavy-ball momentum, written as a model for new optimizers."""

    # Batched mode is opt-in. Claim it only if each instance's update depends
    # on that instance's slice of the tensors alone (element-wise rules do).
    supports_batched = True

    def __init__(self, lr: float = 1e-4, momentum: float = 0.9) -> None:
        # The gradient is that of the SUM of squared errors over a batch of
        # 128 and both outputs, about 256 times the mean-loss gradient, so
        # learning rates are about 256 times smaller than usual.
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.lr = lr
        self.momentum = momentum

    def init_state(self, setup: OptimizerSetup) -> TemplateState:
        """Allocate one momentum buffer per trainable tensor.

        ``setup.tensor_shape(t)`` is ``t.shape`` for one instance and
        ``(B, *t.shape)`` in batched mode (``setup.batch_instances == B``).
        """
        trainable = [t.trainable for t in setup.tensors]
        buffers = [
            torch.zeros(setup.tensor_shape(t), device=setup.device)
            if t.trainable
            else None
            for t in setup.tensors
        ]
        return TemplateState(trainable=trainable, momentum=buffers)

    def query_at_params(
        self,
        state: TemplateState,
        params: Sequence[torch.Tensor],
        ctx: StepContext | BatchedStepContext,
    ) -> list[torch.Tensor] | None:
        """No proposal: train at the current parameters.

        A lookahead method would return e.g. ``[p + mu * m for p, m ...]``,
        one tensor for every parameter, running statistics included.
        """
        return None

    def step(
        self,
        state: TemplateState,
        params: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor],
        ctx: StepContext | BatchedStepContext,
    ) -> list[torch.Tensor | None]:
        """Return one additive update per tensor; None leaves a tensor as is.

        In batched mode ``params``, ``grads`` and the updates all have the
        leading instance dimension; nothing else changes here.
        """
        updates: list[torch.Tensor | None] = []
        for trainable, m, g in zip(state.trainable, state.momentum, grads):
            if not trainable or m is None:
                updates.append(None)
                continue
            m.mul_(self.momentum).add_(g)
            updates.append(m * -self.lr)
        return updates

"""The fixed training loop, as TIG runs it.

Each epoch shuffles the training set, walks it in batches of 128 (the last
one short), optionally takes the forward and backward pass at parameters the
optimizer proposes, hands the gradient of the summed squared error to the
optimizer's ``step``, and adds the returned updates to the trainable tensors.
Validation runs in eval mode after every epoch; the best model by validation
loss is the solution, and 50 epochs without an improvement of more than 1e-7
end the run.

Differences from TIG's own loop, all deliberate: shuffling and weight init
are seeded from the instance seed with PyTorch's generator (TIG's cannot be
reproduced outside its code), and a non-finite loss ends the run as
*diverged* with the best solution so far standing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from nnopt.api import (
    ChallengeOptimizer,
    OptimizerSetup,
    StepContext,
    check_hook_output,
    check_optimizer,
)
from nnopt.data import Instance
from nnopt.model import MLP, derive_generator

__all__ = [
    "EpochRecord",
    "LoopSettings",
    "TrainResult",
    "evaluate_loss",
    "train",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopSettings:
    """The loop's controls. TIG fixes these; change them only to experiment."""

    batch_size: int = 128
    max_epochs: int = 1000
    patience: int = 50  # epochs without improvement before stopping
    min_delta: float = 1e-7  # an improvement must beat the best by more

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_epochs", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not math.isfinite(self.min_delta) or self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta!r}")


@dataclass(frozen=True)
class EpochRecord:
    """One line of a run's metrics."""

    epoch: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    improved: bool
    patience_left: int
    proposals: int  # batches trained at proposed parameters
    wall_time_s: float  # since training started


@dataclass
class TrainResult:
    """What a training run produced."""

    solution: dict[str, torch.Tensor]  # the best model's tensors, by name
    best_val_loss: float
    epochs_used: int  # epochs trained when the solution was saved
    epochs_run: int  # epochs trained in all
    diverged: bool
    stop_reason: str  # "patience", "max_epochs" or "diverged: ..."
    wall_time_s: float
    history: list[EpochRecord] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("solution")
        out.pop("history")
        return out


EpochCallback = Callable[[EpochRecord], None]


def _as_tensors(
    instance: Instance, split: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    x, _, y = instance.split(split)  # type: ignore[arg-type]
    return (
        torch.as_tensor(x, device=device).contiguous(),
        torch.as_tensor(y, device=device).contiguous(),
    )


@torch.no_grad()
def evaluate_loss(
    model: MLP, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 128
) -> float:
    """Per-element mean squared error in eval mode, as TIG validates and tests.

    Eval mode treats samples independently, so batches only bound memory;
    the result is the sample-weighted mean over batches, as in TIG.
    """
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        out = model.forward(x[start : start + batch_size], training=False)
        diff = out - y[start : start + batch_size]
        total += (diff * diff).sum(dtype=torch.float64)
    return float(total) / y.numel()


def train(
    instance: Instance,
    n_hidden: int,
    optimizer: ChallengeOptimizer,
    *,
    device: torch.device | str = "cpu",
    settings: LoopSettings = LoopSettings(),
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train TIG's MLP on ``instance`` with ``optimizer`` in the fixed loop."""
    check_optimizer(optimizer)
    device = torch.device(device)
    profile = instance.profile
    model = MLP(profile.n_inputs, profile.n_outputs, n_hidden, device=device)
    model.init_weights(instance.seed)
    device = model.params[0].device  # resolves "cuda" to "cuda:0"
    params = model.params
    infos = model.infos
    trainable = list(model.trainable_indices)
    for i in trainable:
        params[i].requires_grad_(True)
    trainable_params = [params[i] for i in trainable]
    # Hooks get detached views: they follow every in-place update, and
    # arithmetic on them builds no autograd graph.
    views = [p.detach() for p in params]
    zero_grads = [torch.zeros_like(p) for p in params]

    x_train, y_train = _as_tensors(instance, "train", device)
    x_val, y_val = _as_tensors(instance, "val", device)
    n_train = x_train.shape[0]
    n_outputs = y_train.shape[1]
    bs = settings.batch_size
    steps_per_epoch = math.ceil(n_train / bs)
    shuffle_gen = derive_generator(instance.seed, "shuffle")

    setup = OptimizerSetup(
        seed=bytes(instance.seed),
        tensors=infos,
        device=device,
        n_hidden=n_hidden,
        n_train=n_train,
        batch_size=bs,
        max_epochs=settings.max_epochs,
        steps_per_epoch=steps_per_epoch,
    )
    state = optimizer.init_state(setup)
    query = getattr(optimizer, "query_at_params", None)

    best_val = math.inf
    best_solution = model.state_dict()
    epochs_used = 0
    patience_left = settings.patience
    train_loss: float | None = None
    val_loss: float | None = None
    history: list[EpochRecord] = []
    stop_reason = "max_epochs"
    diverged = False
    step = 0
    start = time.perf_counter()

    for epoch in range(settings.max_epochs):
        order = torch.randperm(n_train, generator=shuffle_gen).to(device)
        sq_err_sum = torch.zeros((), device=device)
        proposals = 0
        for batch in range(steps_per_epoch):
            idx = order[batch * bs : (batch + 1) * bs]
            xb, yb = x_train[idx], y_train[idx]
            ctx = StepContext(epoch, batch, step, train_loss, val_loss, idx.numel())

            proposal = None if query is None else query(state, views, ctx)
            if proposal is not None:
                proposal = check_hook_output(
                    "query_at_params", proposal, infos, device, allow_none=False
                )
                proposals += 1
                with torch.no_grad():
                    backup = [p.clone() for p in params]
                    torch._foreach_copy_(params, proposal)

            out = model.forward(xb, training=True)
            diff = out - yb
            loss_sum = (diff * diff).sum()
            grad_list = torch.autograd.grad(loss_sum, trainable_params)
            sq_err_sum += loss_sum.detach()

            if proposal is not None:
                with torch.no_grad():
                    torch._foreach_copy_(params, backup)

            grads = list(zero_grads)
            for i, g in zip(trainable, grad_list):
                grads[i] = g
            updates = optimizer.step(state, views, grads, ctx)
            updates = check_hook_output("step", updates, infos, device, allow_none=True)
            applied = [i for i in trainable if updates[i] is not None]
            if applied:
                with torch.no_grad():
                    torch._foreach_add_(
                        [params[i] for i in applied], [updates[i] for i in applied]
                    )
            step += 1

        train_loss = float(sq_err_sum) / (n_train * n_outputs)
        val_loss = evaluate_loss(model, x_val, y_val, batch_size=bs)

        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            diverged = True
            stop_reason = (
                f"diverged: non-finite loss at epoch {epoch} "
                f"(train {train_loss}, validation {val_loss})"
            )
            log.warning("run %s", stop_reason)
            improved = False
        else:
            improved = val_loss < best_val - settings.min_delta
        if improved:
            best_val = val_loss
            best_solution = model.state_dict()
            epochs_used = epoch + 1
            patience_left = settings.patience
        elif not diverged:
            patience_left -= 1

        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            best_val_loss=best_val,
            improved=improved,
            patience_left=patience_left,
            proposals=proposals,
            wall_time_s=time.perf_counter() - start,
        )
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if diverged:
            break
        if patience_left <= 0:
            stop_reason = "patience"
            break

    for p in trainable_params:
        p.requires_grad_(False)
    return TrainResult(
        solution=best_solution,
        best_val_loss=best_val,
        epochs_used=epochs_used,
        epochs_run=len(history),
        diverged=diverged,
        stop_reason=stop_reason,
        wall_time_s=time.perf_counter() - start,
        history=history,
    )

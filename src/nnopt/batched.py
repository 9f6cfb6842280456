"""The batched engine: many instances of one track trained at once.

:func:`train_batched` runs the fixed loop of :mod:`nnopt.loop` for B
instances (usually B seeds of one track) in lockstep. Every tensor of the
flat parameter list is stacked along a leading instance dimension
(``[B, out, in]`` for a weight), the Linear layers are batched matrix
products (``torch.baddbmm``/``torch.bmm``), and everything else is per
instance:

* data: each instance trains on its own data, stacked ``[B, N, d]``, in the
  order the one-at-a-time loop uses (``derive_generator(seed, "shuffle")``
  and one ``torch.randperm`` per epoch);
* init: identical to ``MLP.init_weights`` for each seed;
* BatchNorm: batch statistics and running statistics per instance, with the
  momentum, eps and unbiased running variance of ``F.batch_norm``;
* early stopping, best-model saving and divergence: per instance. An instance
  that has stopped stays frozen (its updates and running-statistic changes
  are masked out) and no longer counts; the batch ends when all have stopped;
* proposals: the optimizer's ``query_at_params`` proposes for all instances
  at once; every tensor, running statistics included, is backed up and
  restored around the batch, as in the one-at-a-time loop.

The optimizer is one object for all B instances and must opt in with
``supports_batched = True``; it then sees every tensor with the leading
instance dimension and per-instance losses
(:class:`nnopt.api.BatchedStepContext`, see ``docs/batched.md``).

Each instance's result equals what :func:`nnopt.loop.train` gives for it. On
CPU it is the same bit for bit: every instance's matrix products, reductions
and BatchNorm run with the same kernels and operand layouts as in
``MLP.forward`` (see :class:`_StackedMLP`). On a GPU the
batched kernels round differently, and training amplifies rounding quickly
(1e-7 becomes percents within one epoch at the start of a run), so there
results agree in distribution, and step by step to float tolerance.
``tests/test_batched.py`` checks both.

Caveats: instances that have stopped are still computed (and discarded)
until the whole batch ends, so a batch costs as much as its longest run. On
CPU the gain is small: one instance at a time is already bound by its matrix
products and stays in cache, while B instances stream through memory; the
engine saves the per-step overhead (``benchmarks/README.md``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nnopt.api import (
    BatchedStepContext,
    ChallengeOptimizer,
    HookError,
    OptimizerSetup,
    check_hook_output,
    check_optimizer,
)
from nnopt.data import Instance
from nnopt.loop import EpochRecord, LoopSettings, TrainResult
from nnopt.model import BN_EPS, BN_MOMENTUM, MLP, TensorInfo, derive_generator
from nnopt.seeds import Seed

__all__ = [
    "BatchedModel",
    "BatchedTrainer",
    "InstanceEpochCallback",
    "batched_forward",
    "check_batched_optimizer",
    "train_batched",
]

log = logging.getLogger(__name__)

InstanceEpochCallback = Callable[[int, EpochRecord], None]  # (instance, record)


def _describe(optimizer: object) -> str:
    torch_class = getattr(optimizer, "optimizer_class", None)
    if isinstance(torch_class, type):
        torch_name = f"{torch_class.__module__}.{torch_class.__qualname__}"
        return f"{type(optimizer).__name__}({torch_name})"
    return type(optimizer).__name__


def check_batched_optimizer(optimizer: object, name: str = "optimizer") -> None:
    """Fail unless ``optimizer`` has the hooks and opts in to batched mode."""
    check_optimizer(optimizer, name)
    if getattr(optimizer, "supports_batched", False) is not True:
        raise HookError(
            f"{name} ({_describe(optimizer)}) does not support batched mode (it "
            "does not set supports_batched = True), so one optimizer object "
            "cannot be trusted to step B stacked instances independently. Run "
            "it one instance at a time (without --batched); or, if each "
            "instance's update depends only on that instance's slice of the "
            "tensors, set supports_batched = True on it (a TorchOptimizer takes "
            "elementwise=True); see docs/batched.md"
        )


class BatchedModel:
    """B copies of TIG's MLP, each tensor stacked along a leading dimension.

    ``params[i]`` has shape ``(B, *infos[i].shape)``; ``params[i][b]`` is
    instance ``b``'s tensor. The tensors never require grad: the trainer
    takes gradients on detached views of them.
    """

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        n_hidden: int,
        n_instances: int,
        *,
        device: torch.device | str = "cpu",
    ) -> None:
        if n_instances < 1:
            raise ValueError(f"n_instances must be at least 1, got {n_instances}")
        # One CPU copy of the one-instance model gives the layout and roles.
        layout = MLP(n_inputs, n_outputs, n_hidden)
        self.n_hidden = n_hidden
        self.n_instances = n_instances
        self.shape = (n_inputs, n_outputs)
        self.infos: tuple[TensorInfo, ...] = layout.infos
        self.trainable_indices = layout.trainable_indices
        self.params = [
            torch.zeros((n_instances, *p.shape), device=device).copy_(p)
            for p in layout.params
        ]
        self.device = self.params[0].device  # resolves "cuda" to "cuda:0"

    def init_weights(self, seeds: Sequence[Seed | bytes]) -> None:
        """Instance ``b`` gets exactly ``MLP.init_weights(seeds[b])``."""
        if len(seeds) != self.n_instances:
            raise ValueError(f"got {len(seeds)} seeds for {self.n_instances} instances")
        one = MLP(*self.shape, self.n_hidden)
        for b, seed in enumerate(seeds):
            one.init_weights(seed)
            for stacked, p in zip(self.params, one.params):
                stacked[b].copy_(p)

    def forward(
        self,
        x: torch.Tensor,
        *,
        training: bool,
        params: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Outputs ``[B, n, outputs]`` for inputs ``[B, n, inputs]``."""
        p = self.params if params is None else params
        return batched_forward(p, self.n_hidden, x, training=training)

    def state_dict(self, b: int) -> dict[str, torch.Tensor]:
        """Named copies of instance ``b``'s tensors, as ``MLP.state_dict``."""
        return {i.name: p[b].clone() for i, p in zip(self.infos, self.params)}


def _linear_into(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """``F.linear`` per instance: ``[n, g, in]`` to ``[n, g, out]``.

    ``bmm`` writes straight into the sample-major layout through a strided
    ``out``, with the operand layouts ``F.linear`` uses for one instance.
    """
    n, g, out_features = h.shape[0], weight.shape[0], weight.shape[1]
    out = torch.empty((n, g, out_features), dtype=h.dtype, device=h.device)
    torch.baddbmm(
        bias.unsqueeze(1),
        h.transpose(0, 1),
        weight.transpose(1, 2),
        out=out.transpose(0, 1),
    )
    return out


def _stacked_forward(
    params: Sequence[torch.Tensor], n_hidden: int, x: torch.Tensor, training: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The forward pass, and what the backward pass needs.

    Activations are sample-major, ``[n, g, C]``: the instances' features are
    then ``g * C`` adjacent channels of one ``[n, g * C]`` BatchNorm input,
    which keeps statistics per instance with no copy, and updates the
    (contiguous) running statistics in place through ``view(-1)``.
    """
    bn_base = 2 * (n_hidden + 1)
    h = x.transpose(0, 1)
    saved: list[torch.Tensor] = []
    for i in range(n_hidden):
        a = _linear_into(h, params[2 * i], params[2 * i + 1]).relu_()
        n, g, c = a.shape
        gamma, beta, mean, var = params[bn_base + 4 * i : bn_base + 4 * i + 4]
        out, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
            a.view(n, g * c),
            gamma.reshape(-1),
            beta.reshape(-1),
            mean.view(-1),
            var.view(-1),
            training,
            BN_MOMENTUM,
            BN_EPS,
        )
        saved += [h, a, save_mean, save_invstd]
        h = out.view(n, g, c)
    last = 2 * n_hidden
    saved.append(h)
    return _linear_into(h, params[last], params[last + 1]), saved


class _StackedMLP(torch.autograd.Function):
    """The whole network for g stacked instances, as one autograd node.

    Forward and backward use the kernels and operand layouts that autograd
    uses for ``MLP.forward`` on one instance (``addmm``/``mm`` become
    ``baddbmm``/``bmm`` over the same matrices, BatchNorm and ReLU the same
    ATen functions), so on CPU each instance's gradient matches the one-
    instance model bit for bit. One node instead of a dozen per layer keeps
    the per-step overhead low.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, n_hidden: int, x: torch.Tensor, *params: torch.Tensor
    ) -> torch.Tensor:
        out, saved = _stacked_forward(params, n_hidden, x, training=True)
        ctx.n_hidden = n_hidden
        ctx.save_for_backward(*saved, *params)
        return out

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        n_hidden = ctx.n_hidden
        tensors = ctx.saved_tensors
        saved, params = tensors[: 4 * n_hidden + 1], tensors[4 * n_hidden + 1 :]
        needs = ctx.needs_input_grad[2:]
        grads: list[torch.Tensor | None] = [None] * len(params)
        bn_base = 2 * (n_hidden + 1)

        def linear_backward(i: int, h_in: torch.Tensor, grad_out: torch.Tensor):
            grad_t = grad_out.transpose(0, 1)  # [g, n, out]
            if needs[2 * i]:
                grads[2 * i] = torch.bmm(grad_t.transpose(1, 2), h_in.transpose(0, 1))
            if needs[2 * i + 1]:
                grads[2 * i + 1] = grad_out.sum(0)
            if i == 0:
                return None
            grad_h = torch.empty_like(h_in, memory_format=torch.contiguous_format)
            torch.bmm(grad_t, params[2 * i], out=grad_h.transpose(0, 1))
            return grad_h

        grad_h = linear_backward(n_hidden, saved[-1], grad)
        for i in reversed(range(n_hidden)):
            h_in, a, save_mean, save_invstd = saved[4 * i : 4 * i + 4]
            n, g, c = a.shape
            gamma, beta, mean, var = params[bn_base + 4 * i : bn_base + 4 * i + 4]
            k = bn_base + 4 * i
            grad_a, grad_gamma, grad_beta = torch.ops.aten.native_batch_norm_backward(
                grad_h.view(n, g * c),
                a.view(n, g * c),
                gamma.reshape(-1),
                mean.view(-1),
                var.view(-1),
                save_mean,
                save_invstd,
                True,
                BN_EPS,
                [True, needs[k], needs[k + 1]],
            )
            if needs[k]:
                grads[k] = grad_gamma.view(g, c)
            if needs[k + 1]:
                grads[k + 1] = grad_beta.view(g, c)
            grad_z = torch.ops.aten.threshold_backward(grad_a, a.view(n, g * c), 0)
            grad_h = linear_backward(i, h_in, grad_z.view(n, g, c))
        return (None, None, *grads)


def batched_forward(
    params: Sequence[torch.Tensor],
    n_hidden: int,
    x: torch.Tensor,
    *,
    training: bool,
) -> torch.Tensor:
    """``MLP.forward`` for stacked tensors ``[g, ...]`` and inputs ``[g, n, d]``.

    Returns outputs ``[g, n, outputs]``; in training mode the running
    statistics in ``params`` update in place, and gradients flow to those
    of ``params`` that require them.
    """
    if training and torch.is_grad_enabled():
        out = _StackedMLP.apply(n_hidden, x, *params)
    else:
        out, _ = _stacked_forward(params, n_hidden, x, training)
    return out.transpose(0, 1)


@dataclass
class _InstanceProgress:
    """One instance's early-stopping bookkeeping."""

    best_val: float = math.inf
    epochs_used: int = 0
    patience_left: int = 0
    active: bool = True
    diverged: bool = False
    stop_reason: str = "max_epochs"
    wall_time_s: float = 0.0
    train_loss: float | None = None
    val_loss: float | None = None


def _stack_split(
    instances: Sequence[Instance], split: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for inst in instances:
        x, _, y = inst.split(split)  # type: ignore[arg-type]
        xs.append(torch.as_tensor(x))
        ys.append(torch.as_tensor(y))
    return torch.stack(xs).to(device), torch.stack(ys).to(device)


class BatchedTrainer:
    """The fixed loop for B instances at once; see the module docstring.

    ``instances_per_pass`` bounds how many instances one forward and
    backward pass covers (default: all), to bound memory; it changes speed
    and memory only, never results.
    """

    def __init__(
        self,
        instances: Sequence[Instance],
        n_hidden: int,
        optimizer: ChallengeOptimizer,
        *,
        device: torch.device | str = "cpu",
        settings: LoopSettings = LoopSettings(),
        instances_per_pass: int | None = None,
        name: str = "optimizer",
    ) -> None:
        if not instances:
            raise ValueError("train_batched needs at least one instance")
        check_batched_optimizer(optimizer, name)
        first = instances[0].profile
        shape = (first.n_inputs, first.n_outputs, first.n_train, first.n_val)
        for inst in instances:
            p = inst.profile
            if (p.n_inputs, p.n_outputs, p.n_train, p.n_val) != shape:
                raise ValueError(
                    "instances trained together need the same data shape "
                    "(inputs, outputs, training and validation samples); "
                    f"profile {first.name!r} has {shape}, profile {p.name!r} "
                    f"has {(p.n_inputs, p.n_outputs, p.n_train, p.n_val)}"
                )
        self.instances = list(instances)
        self.n_hidden = n_hidden
        self.optimizer = optimizer
        self.settings = settings
        self.model = BatchedModel(
            first.n_inputs, first.n_outputs, n_hidden, len(instances), device=device
        )
        self.model.init_weights([inst.seed for inst in instances])
        self.device = self.model.device
        n = len(instances)
        per_pass = n if instances_per_pass is None else instances_per_pass
        if per_pass < 1:
            raise ValueError(f"instances_per_pass must be positive, got {per_pass}")
        self.passes = [(lo, min(lo + per_pass, n)) for lo in range(0, n, per_pass)]

    def _loss_and_grads(
        self, xb: torch.Tensor, yb: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Per-instance summed squared errors ``[B]`` and trainable gradients.

        The gradient of each instance is that of its own summed squared error
        (2 * (out - y)), as the one-at-a-time loop hands the optimizer.
        """
        params = self.model.params
        trainable = self.model.trainable_indices
        sq_errs: list[torch.Tensor] = []
        grad_parts: list[tuple[torch.Tensor, ...]] = []
        for lo, hi in self.passes:
            part = [p[lo:hi] for p in params]
            leaves = [part[i].detach().requires_grad_(True) for i in trainable]
            for i, leaf in zip(trainable, leaves):
                part[i] = leaf
            out = batched_forward(part, self.n_hidden, xb[lo:hi], training=True)
            # Contiguous, so each instance's sum runs as in the one-instance loop.
            diff = out.contiguous() - yb[lo:hi]
            sq_err = (diff * diff).sum(dim=(1, 2))
            grad_parts.append(torch.autograd.grad(sq_err.sum(), leaves))
            sq_errs.append(sq_err.detach())
        if len(self.passes) == 1:
            # Hooks get contiguous tensors, as fused optimizers assume.
            return sq_errs[0], [g.contiguous() for g in grad_parts[0]]
        grads = [torch.cat(gs) for gs in zip(*grad_parts)]
        return torch.cat(sq_errs), grads

    @torch.no_grad()
    def _val_losses(self, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        """Per-instance validation MSE in eval mode, summed in float64."""
        totals = []
        for lo, hi in self.passes:
            part = [p[lo:hi] for p in self.model.params]
            out = batched_forward(part, self.n_hidden, x[lo:hi], training=False)
            diff = out.contiguous() - y[lo:hi]
            totals.append((diff * diff).sum(dim=(1, 2), dtype=torch.float64))
        per_instance = y[0].numel()
        return [t / per_instance for t in torch.cat(totals).tolist()]

    def run(self, on_epoch: InstanceEpochCallback | None = None) -> list[TrainResult]:
        """Train every instance; one :class:`TrainResult` each, in order."""
        settings = self.settings
        model, device = self.model, self.device
        params, infos = model.params, model.infos
        trainable = list(model.trainable_indices)
        stat_indices = [
            i.index for i in infos if i.role in ("bn_running_mean", "bn_running_var")
        ]
        zero_grads = [torch.zeros_like(p) for p in params]
        n = len(self.instances)

        x_train, y_train = _stack_split(self.instances, "train", device)
        x_val, y_val = _stack_split(self.instances, "val", device)
        n_train = x_train.shape[1]
        n_outputs = y_train.shape[2]
        bs = settings.batch_size
        steps_per_epoch = math.ceil(n_train / bs)
        seeds = [bytes(inst.seed) for inst in self.instances]
        shuffle_gens = [derive_generator(seed, "shuffle") for seed in seeds]
        rows = torch.arange(n, device=device).unsqueeze(1)

        setup = OptimizerSetup(
            seed=seeds[0],
            tensors=infos,
            device=device,
            n_hidden=self.n_hidden,
            n_train=n_train,
            batch_size=bs,
            max_epochs=settings.max_epochs,
            steps_per_epoch=steps_per_epoch,
            batch_instances=n,
            seeds=tuple(seeds),
        )
        optimizer = self.optimizer
        state = optimizer.init_state(setup)
        query = getattr(optimizer, "query_at_params", None)

        progress = [_InstanceProgress(patience_left=settings.patience) for _ in seeds]
        histories: list[list[EpochRecord]] = [[] for _ in seeds]
        best = [p.clone() for p in params]
        orders: list[torch.Tensor] = [torch.empty(0, dtype=torch.long)] * n
        train_losses: tuple[float, ...] | None = None
        val_losses: tuple[float, ...] | None = None
        step = 0
        start = time.perf_counter()

        for epoch in range(settings.max_epochs):
            active = tuple(p.active for p in progress)
            for b in range(n):
                if active[b]:
                    orders[b] = torch.randperm(n_train, generator=shuffle_gens[b])
            order = torch.stack(orders).to(device)
            masks = None
            if not all(active):
                active_t = torch.tensor(active, device=device)
                masks = [active_t.view(n, *([1] * len(i.shape))) for i in infos]
            sq_err_sum = torch.zeros(n, device=device)
            proposals = 0

            for batch in range(steps_per_epoch):
                idx = order[:, batch * bs : (batch + 1) * bs]
                xb, yb = x_train[rows, idx], y_train[rows, idx]
                ctx = BatchedStepContext(
                    epoch, batch, step, train_losses, val_losses, idx.shape[1], active
                )

                proposal = None if query is None else query(state, params, ctx)
                backup: list[torch.Tensor] | None = None
                if proposal is not None:
                    proposal = check_hook_output(
                        "query_at_params",
                        proposal,
                        infos,
                        device,
                        allow_none=False,
                        batch_dims=(n,),
                    )
                    proposals += 1
                    backup = [p.clone() for p in params]
                    torch._foreach_copy_(params, proposal)
                elif masks is not None:
                    backup = [params[i].clone() for i in stat_indices]

                sq_err, grad_list = self._loss_and_grads(xb, yb)
                sq_err_sum += sq_err

                if proposal is not None:
                    torch._foreach_copy_(params, backup)
                elif masks is not None and backup is not None:
                    # Stopped instances keep their running statistics.
                    for i, old in zip(stat_indices, backup):
                        params[i].copy_(torch.where(masks[i], params[i], old))

                grads = list(zero_grads)
                for i, g in zip(trainable, grad_list):
                    grads[i] = g
                updates = optimizer.step(state, params, grads, ctx)
                updates = check_hook_output(
                    "step", updates, infos, device, allow_none=True, batch_dims=(n,)
                )
                targets = [i for i in trainable if updates[i] is not None]
                deltas = [updates[i] for i in targets]
                if masks is not None:  # stopped instances stay as they are
                    deltas = [
                        torch.where(masks[i], d, 0.0) for i, d in zip(targets, deltas)
                    ]
                torch._foreach_add_([params[i] for i in targets], deltas)
                step += 1

            epoch_train = [s / (n_train * n_outputs) for s in sq_err_sum.tolist()]
            epoch_val = self._val_losses(x_val, y_val)
            elapsed = time.perf_counter() - start
            improved_rows = []
            for b, prog in enumerate(progress):
                if not active[b]:
                    continue
                record = self._finish_epoch(
                    prog, epoch, epoch_train[b], epoch_val[b], proposals, elapsed
                )
                if record.improved:
                    improved_rows.append(b)
                histories[b].append(record)
                if on_epoch is not None:
                    on_epoch(b, record)
            if improved_rows:
                index = torch.tensor(improved_rows, device=device)
                for saved, p in zip(best, params):
                    saved.index_copy_(0, index, p.index_select(0, index))
            train_losses = tuple(p.train_loss for p in progress)  # type: ignore[misc]
            val_losses = tuple(p.val_loss for p in progress)  # type: ignore[misc]
            if not any(p.active for p in progress):
                break

        end = time.perf_counter() - start
        results = []
        for b, prog in enumerate(progress):
            results.append(
                TrainResult(
                    solution={i.name: t[b].clone() for i, t in zip(infos, best)},
                    best_val_loss=prog.best_val,
                    epochs_used=prog.epochs_used,
                    epochs_run=len(histories[b]),
                    diverged=prog.diverged,
                    stop_reason=prog.stop_reason,
                    wall_time_s=end if prog.active else prog.wall_time_s,
                    history=histories[b],
                )
            )
        return results

    def _finish_epoch(
        self,
        prog: _InstanceProgress,
        epoch: int,
        train_loss: float,
        val_loss: float,
        proposals: int,
        elapsed: float,
    ) -> EpochRecord:
        """Early stopping for one instance, exactly as ``nnopt.loop.train``."""
        settings = self.settings
        prog.train_loss, prog.val_loss = train_loss, val_loss
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            prog.diverged = True
            prog.stop_reason = (
                f"diverged: non-finite loss at epoch {epoch} "
                f"(train {train_loss}, validation {val_loss})"
            )
            log.warning("run %s", prog.stop_reason)
            improved = False
        else:
            improved = val_loss < prog.best_val - settings.min_delta
        if improved:
            prog.best_val = val_loss
            prog.epochs_used = epoch + 1
            prog.patience_left = settings.patience
        elif not prog.diverged:
            prog.patience_left -= 1
        if prog.diverged or prog.patience_left <= 0:
            prog.active = False
            prog.wall_time_s = elapsed
            if not prog.diverged:
                prog.stop_reason = "patience"
        return EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            best_val_loss=prog.best_val,
            improved=improved,
            patience_left=prog.patience_left,
            proposals=proposals,
            wall_time_s=elapsed,
        )


def train_batched(
    instances: Sequence[Instance],
    n_hidden: int,
    optimizer: ChallengeOptimizer,
    *,
    device: torch.device | str = "cpu",
    settings: LoopSettings = LoopSettings(),
    on_epoch: InstanceEpochCallback | None = None,
    instances_per_pass: int | None = None,
    name: str = "optimizer",
) -> list[TrainResult]:
    """Train TIG's MLP on every instance at once; one result per instance.

    ``optimizer`` is a single object serving all instances in batched mode
    (it must declare ``supports_batched = True``). ``on_epoch(b, record)``
    is called after each epoch of each instance still training. A result's
    ``wall_time_s`` is the time from the start of the batch until that
    instance stopped; instances share that time, so the times do not add.
    """
    trainer = BatchedTrainer(
        instances,
        n_hidden,
        optimizer,
        device=device,
        settings=settings,
        instances_per_pass=instances_per_pass,
        name=name,
    )
    return trainer.run(on_epoch)

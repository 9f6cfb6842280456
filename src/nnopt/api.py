"""The optimizer API: three hooks, the context they receive, and their checks.

An optimizer is any object with these methods (a class instance, a module):

``init_state(setup) -> state``
    Called once before training. ``setup`` (:class:`OptimizerSetup`) describes
    every tensor of the flat parameter list: name, shape, role, trainable.
    Return any object; the harness hands it back to the other hooks and never
    looks inside. Keep mutable optimizer state in it.

``query_at_params(state, params, ctx) -> list[Tensor] | None`` (optional)
    Called before each batch's forward pass. Return ``None`` to train at the
    current parameters, or a full list of proposed tensors (one per parameter,
    running statistics included) to take this batch's forward and backward at
    those instead. The harness backs up every tensor, loads the proposal, runs
    the batch, and restores the backup, which also undoes the batch's update
    of BatchNorm running statistics.

``step(state, params, grads, ctx) -> list[Tensor | None]``
    Called after each batch's backward pass with the current parameters and
    the gradient of the *summed* squared error over the batch and outputs.
    Return one additive update per tensor (``None`` means no change). The
    harness adds updates to trainable tensors and ignores the rest.

``params`` and ``grads`` are the harness's own tensors: read them, never
write to them. Every hook gets ``ctx`` (:class:`StepContext`): the epoch, the
batch, and the previous epoch's mean train and validation losses.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from nnopt.model import TensorInfo

__all__ = [
    "BatchedStepContext",
    "ChallengeOptimizer",
    "HookError",
    "OptimizerSetup",
    "StepContext",
    "check_hook_output",
    "check_optimizer",
]


@dataclass(frozen=True)
class StepContext:
    """What an optimizer knows about where training is."""

    epoch: int  # 0-based epoch
    batch: int  # 0-based batch within the epoch
    step: int  # 0-based count of steps taken so far in this run
    train_loss: float | None  # previous epoch's mean train loss (None at epoch 0)
    val_loss: float | None  # previous epoch's validation loss (None at epoch 0)
    batch_size: int  # samples in this batch (the last batch is short)


@dataclass(frozen=True)
class BatchedStepContext:
    """What a batched optimizer knows: a :class:`StepContext` for B instances.

    All instances share the epoch, batch, step and batch size. Losses are
    per instance, tuples of B floats (None at epoch 0), equal to what the
    one-at-a-time loop would pass each instance. ``active[b]`` is False once
    instance ``b`` has stopped: its updates are ignored and its losses stay
    at their last values.
    """

    epoch: int
    batch: int
    step: int
    train_loss: tuple[float, ...] | None
    val_loss: tuple[float, ...] | None
    batch_size: int
    active: tuple[bool, ...]

    def instance(self, b: int) -> StepContext:
        """The one-instance context of instance ``b``."""
        return StepContext(
            self.epoch,
            self.batch,
            self.step,
            None if self.train_loss is None else self.train_loss[b],
            None if self.val_loss is None else self.val_loss[b],
            self.batch_size,
        )


@dataclass(frozen=True)
class OptimizerSetup:
    """Everything ``init_state`` receives."""

    seed: bytes  # the instance's 32 seed bytes
    tensors: tuple[TensorInfo, ...]  # one entry per tensor, in list order
    device: torch.device
    n_hidden: int  # the track
    n_train: int  # training samples per epoch
    batch_size: int  # nominal batch size (128)
    max_epochs: int  # the loop never runs more epochs than this
    steps_per_epoch: int
    # Batched mode (docs/batched.md): the number of instances B trained at
    # once, each tensor and gradient with a leading dimension of size B, and
    # every instance's seed (``seed`` is then the first). None: one instance.
    batch_instances: int | None = None
    seeds: tuple[bytes, ...] = ()

    def tensor_shape(self, info: TensorInfo) -> tuple[int, ...]:
        """The shape hooks see for ``info``: ``(B, *info.shape)`` when batched."""
        if self.batch_instances is None:
            return info.shape
        return (self.batch_instances, *info.shape)

    @property
    def param_sizes(self) -> list[int]:
        """Element counts, as TIG's ``param_sizes``."""
        return [math.prod(t.shape) for t in self.tensors]

    @property
    def trainable(self) -> list[TensorInfo]:
        return [t for t in self.tensors if t.trainable]


@runtime_checkable
class ChallengeOptimizer(Protocol):
    """The hooks an optimizer provides; ``query_at_params`` is optional."""

    def init_state(self, setup: OptimizerSetup) -> Any: ...

    def step(
        self,
        state: Any,
        params: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor],
        ctx: StepContext,
    ) -> Sequence[torch.Tensor | None]: ...


class HookError(RuntimeError):
    """An optimizer hook is missing, mis-declared, or returned something wrong."""


_HOOK_ARITY = {"init_state": 1, "query_at_params": 3, "step": 4}


def check_optimizer(optimizer: object, name: str = "optimizer") -> None:
    """Fail before training if ``optimizer`` does not provide the hooks."""
    for hook, arity in _HOOK_ARITY.items():
        fn = getattr(optimizer, hook, None)
        if fn is None:
            if hook == "query_at_params":
                continue
            raise HookError(
                f"{name} has no {hook}() hook; an optimizer needs init_state(setup) "
                "and step(state, params, grads, ctx), and may have "
                "query_at_params(state, params, ctx)"
            )
        if not callable(fn):
            raise HookError(f"{name}.{hook} is not callable")
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            continue
        try:
            sig.bind(*range(arity))
        except TypeError:
            expected = {
                "init_state": "init_state(setup)",
                "query_at_params": "query_at_params(state, params, ctx)",
                "step": "step(state, params, grads, ctx)",
            }[hook]
            raise HookError(
                f"{name}.{hook} has signature {hook}{sig}, but the harness calls "
                f"{expected} with {arity} positional argument(s)"
            ) from None


def check_hook_output(
    hook: str,
    tensors: object,
    infos: Sequence[TensorInfo],
    device: torch.device,
    *,
    allow_none: bool,
    batch_dims: tuple[int, ...] = (),
) -> list[torch.Tensor | None]:
    """Check a hook returned one tensor of the right shape, dtype and device each."""
    if not isinstance(tensors, (list, tuple)):
        raise HookError(
            f"{hook}() must return a list of tensors, got {type(tensors).__name__}"
        )
    if len(tensors) != len(infos):
        raise HookError(
            f"{hook}() returned {len(tensors)} tensors, expected {len(infos)} "
            "(one per parameter tensor, running statistics included)"
        )
    for info, t in zip(infos, tensors):
        if t is None:
            if allow_none:
                continue
            raise HookError(
                f"{hook}() returned None at index {info.index} ({info.name}); "
                "a proposal must give every tensor"
            )
        if not isinstance(t, torch.Tensor):
            raise HookError(
                f"{hook}() returned a {type(t).__name__} at index {info.index} "
                f"({info.name}), expected a torch.Tensor"
            )
        expected = (*batch_dims, *info.shape)
        if tuple(t.shape) != expected:
            raise HookError(
                f"{hook}() returned shape {tuple(t.shape)} at index {info.index} "
                f"({info.name}), expected {expected}"
            )
        if t.dtype != torch.float32:
            raise HookError(
                f"{hook}() returned dtype {t.dtype} at index {info.index} "
                f"({info.name}), expected torch.float32"
            )
        if t.device != device:
            raise HookError(
                f"{hook}() returned a tensor on {t.device} at index {info.index} "
                f"({info.name}), expected {device}"
            )
    return list(tensors)

"""Shared fixtures: instances, a recording optimizer and its update rules.

Training tests run on ``n_hidden`` 2 to 4 for a handful of epochs, so the
whole suite stays fast on a shared CPU. Torch is pinned to one thread: with
several test workers (or other jobs) on two cores, more threads only spin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings

from nnopt.api import OptimizerSetup, StepContext
from nnopt.data import Instance, generate_instance

torch.set_num_threads(1)

settings.register_profile(
    "nnopt",
    deadline=None,  # a shared CPU makes single examples slow now and then
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("nnopt")

SEED = "harness-tests"


@pytest.fixture(scope="session")
def instance() -> Instance:
    """The deployed (TIG) shape: 1 input, 2 outputs."""
    return generate_instance(SEED, "tig")


@pytest.fixture(scope="session")
def spec_instance() -> Instance:
    """The challenge text's shape: 8 inputs, 1 output."""
    return generate_instance(SEED, "spec")


def clone_all(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach().clone() for t in tensors]


@dataclass
class Event:
    """One hook call as the recording optimizer saw it."""

    hook: str  # "query" or "step"
    ctx: StepContext
    params: list[torch.Tensor]  # copies, taken when the hook was called
    grads: list[torch.Tensor] | None = None  # step only
    proposal: list[torch.Tensor] | None = None  # query only, if one was made


UpdateFn = Callable[
    [StepContext, Sequence[torch.Tensor], Sequence[torch.Tensor]],
    Sequence[torch.Tensor | None],
]
ProposeFn = Callable[[StepContext, Sequence[torch.Tensor]], list[torch.Tensor] | None]


@dataclass
class Recorder:
    """An optimizer that records every hook call and does what it is told.

    ``update(ctx, params, grads)`` gives ``step``'s return value (default: no
    change); ``propose(ctx, params)`` gives ``query_at_params``'s (default:
    none). ``views`` keeps the harness's live parameter views, so an
    ``on_epoch`` callback can copy the state at the end of each epoch.
    """

    update: UpdateFn | None = None
    propose: ProposeFn | None = None
    setup: OptimizerSetup | None = None
    events: list[Event] = field(default_factory=list)
    views: Sequence[torch.Tensor] = ()
    epoch_states: list[list[torch.Tensor]] = field(default_factory=list)

    def init_state(self, setup: OptimizerSetup) -> dict[str, Any]:
        self.setup = setup
        return {"calls": 0}

    def query_at_params(
        self, state: dict[str, Any], params: Sequence[torch.Tensor], ctx: StepContext
    ) -> list[torch.Tensor] | None:
        self.views = params
        proposal = None if self.propose is None else self.propose(ctx, params)
        self.events.append(
            Event(
                "query",
                ctx,
                clone_all(params),
                proposal=None if proposal is None else clone_all(proposal),
            )
        )
        return proposal

    def step(
        self,
        state: dict[str, Any],
        params: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor],
        ctx: StepContext,
    ) -> Sequence[torch.Tensor | None]:
        state["calls"] += 1
        self.views = params
        self.events.append(Event("step", ctx, clone_all(params), clone_all(grads)))
        if self.update is None:
            return [None] * len(params)
        return self.update(ctx, params, grads)

    def on_epoch(self, record: Any) -> None:
        """Pass as ``train(on_epoch=...)`` to keep each epoch's final state."""
        self.epoch_states.append(clone_all(self.views))

    def steps(self) -> list[Event]:
        return [e for e in self.events if e.hook == "step"]

    def queries(self) -> list[Event]:
        return [e for e in self.events if e.hook == "query"]


@pytest.fixture
def recorder() -> type[Recorder]:
    """The :class:`Recorder` class; build one per run."""
    return Recorder


def descend(lr: float) -> UpdateFn:
    """Plain gradient descent on the trainable tensors."""

    def update(ctx, params, grads):
        return [-lr * g for g in grads]

    return update


def ascend_after(epoch: int, lr: float, ascent_lr: float) -> UpdateFn:
    """Gradient descent, then from ``epoch`` on gradient ascent."""

    def update(ctx, params, grads):
        rate = -lr if ctx.epoch < epoch else ascent_lr
        return [rate * g for g in grads]

    return update


@pytest.fixture
def rules() -> SimpleNamespace:
    """Update rules for :class:`Recorder`: ``descend``, ``ascend_after``."""
    return SimpleNamespace(descend=descend, ascend_after=ascend_after)

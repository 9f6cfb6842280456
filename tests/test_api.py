"""The optimizer API: hook checks before training and output checks during it."""

from __future__ import annotations

import types

import pytest
import torch

from nnopt.api import (
    ChallengeOptimizer,
    HookError,
    StepContext,
    check_hook_output,
    check_optimizer,
)
from nnopt.loop import LoopSettings, train
from nnopt.model import MLP
from nnopt.optimizers.template import TemplateOptimizer

ONE_EPOCH = LoopSettings(max_epochs=1)
INFOS = MLP(1, 2, 2, width=4).infos  # 14 tensors; index 2 is linear.1.weight (4, 4)


class Counting:
    """Records whether init_state was ever called."""

    def __init__(self) -> None:
        self.initialised = False

    def init_state(self, setup):
        self.initialised = True
        return None


class NoStep(Counting):
    pass


class NoInit:
    def step(self, state, params, grads, ctx):
        return [None] * len(params)


class ShortStep(Counting):
    def step(self, state, params, grads):
        return [None] * len(params)


class KeywordOnlyStep(Counting):
    def step(self, state, params, grads, *, ctx):
        return [None] * len(params)


class ShortQuery(Counting):
    def query_at_params(self, state, params):
        return None

    def step(self, state, params, grads, ctx):
        return [None] * len(params)


class StepNotCallable(Counting):
    step = 3


@pytest.mark.parametrize(
    ("optimizer", "match"),
    [
        (NoStep(), r"has no step\(\) hook"),
        (NoInit(), r"has no init_state\(\) hook"),
        (ShortStep(), r"step has signature step\(state, params, grads\)"),
        (KeywordOnlyStep(), r"step\(state, params, grads, ctx\) with 4 positional"),
        (ShortQuery(), r"query_at_params has signature"),
        (StepNotCallable(), "step is not callable"),
    ],
    ids=["no-step", "no-init", "short-step", "kw-ctx", "short-query", "not-callable"],
)
def test_bad_optimizers_fail_before_training(instance, optimizer, match) -> None:
    with pytest.raises(HookError, match=match):
        train(instance, 2, optimizer, settings=ONE_EPOCH)
    assert not getattr(optimizer, "initialised", False)


def test_optimizer_class_instead_of_instance_is_rejected(instance) -> None:
    with pytest.raises(HookError, match="signature"):
        check_optimizer(TemplateOptimizer)


def test_good_optimizers_pass_the_check() -> None:
    check_optimizer(TemplateOptimizer())
    module = types.SimpleNamespace(
        init_state=lambda setup: None,
        step=lambda state, params, grads, ctx, extra=None: [None] * len(params),
    )
    check_optimizer(module)  # an object with plain functions, like a module
    check_optimizer(
        types.SimpleNamespace(init_state=lambda *a: None, step=lambda *a: [])
    )
    assert isinstance(TemplateOptimizer(), ChallengeOptimizer)


def test_check_names_the_optimizer() -> None:
    with pytest.raises(HookError, match=r"^my_opt has no step\(\)"):
        check_optimizer(NoStep(), "my_opt")


def good(info) -> torch.Tensor:
    return torch.zeros(info.shape)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda ts: ts[:-1], "returned 13 tensors, expected 14"),
        (lambda ts: [*ts, ts[0]], "returned 15 tensors, expected 14"),
        (
            lambda ts: ts[:2] + [torch.zeros(4, 5)] + ts[3:],
            r"shape \(4, 5\) at index 2 \(linear.1.weight\), expected \(4, 4\)",
        ),
        (
            lambda ts: ts[:2] + [torch.zeros(16)] + ts[3:],
            r"shape \(16,\) at index 2 .* expected \(4, 4\)",
        ),
        (
            lambda ts: ts[:3] + [ts[3].double()] + ts[4:],
            r"dtype torch.float64 at index 3 \(linear.1.bias\)",
        ),
        (
            lambda ts: ts[:5] + [torch.zeros(2, device="meta")] + ts[6:],
            r"on meta at index 5 \(linear.2.bias\), expected cpu",
        ),
        (
            lambda ts: ts[:1] + [[0.0] * 4] + ts[2:],
            r"a list at index 1 \(linear.0.bias\), expected a torch.Tensor",
        ),
    ],
    ids=["short", "long", "shape", "flat", "dtype", "device", "type"],
)
def test_check_hook_output_names_the_tensor(mutate, match) -> None:
    tensors = mutate([good(i) for i in INFOS])
    with pytest.raises(HookError, match=match):
        check_hook_output("step", tensors, INFOS, torch.device("cpu"), allow_none=True)


def test_check_hook_output_none_rules() -> None:
    tensors = [None] * len(INFOS)
    out = check_hook_output(
        "step", tensors, INFOS, torch.device("cpu"), allow_none=True
    )
    assert out == tensors
    with pytest.raises(HookError, match=r"None at index 0 \(linear.0.weight\)"):
        check_hook_output(
            "query_at_params", tensors, INFOS, torch.device("cpu"), allow_none=False
        )
    with pytest.raises(HookError, match="must return a list of tensors, got dict"):
        check_hook_output("step", {}, INFOS, torch.device("cpu"), allow_none=True)


def test_check_hook_output_batch_dims() -> None:
    tensors = [torch.zeros(3, *i.shape) for i in INFOS]
    check_hook_output(
        "step", tensors, INFOS, torch.device("cpu"), allow_none=True, batch_dims=(3,)
    )
    with pytest.raises(HookError, match=r"expected \(3, 4, 1\)"):
        check_hook_output(
            "step",
            [torch.zeros(i.shape) for i in INFOS],
            INFOS,
            torch.device("cpu"),
            allow_none=True,
            batch_dims=(3,),
        )


class Returns(Counting):
    """step (or query_at_params) returns what ``make(params)`` builds."""

    def __init__(self, make, *, in_query: bool = False) -> None:
        super().__init__()
        self.make = make
        self.in_query = in_query

    def query_at_params(self, state, params, ctx):
        return self.make(list(params)) if self.in_query else None

    def step(self, state, params, grads, ctx):
        return [None] * len(params) if self.in_query else self.make(list(params))


def replace(index: int, value: torch.Tensor):
    def make(params):
        out = [torch.zeros_like(p) for p in params]
        out[index] = value
        return out

    return make


@pytest.mark.parametrize("in_query", [False, True], ids=["step", "query"])
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda ps: ps[:-1], r"returned 13 tensors, expected 14"),
        (
            replace(2, torch.zeros(256, 255)),
            r"shape \(256, 255\) at index 2 \(linear.1.weight\), expected \(256, 256\)",
        ),
        (
            replace(0, torch.zeros(256, 1, dtype=torch.float64)),
            r"dtype torch.float64 at index 0 \(linear.0.weight\)",
        ),
        (
            replace(7, torch.zeros(256, device="meta")),
            r"on meta at index 7 \(bn.0.beta\), expected cpu",
        ),
        (lambda ps: "nope", "must return a list of tensors, got str"),
    ],
    ids=["count", "shape", "dtype", "device", "type"],
)
def test_bad_hook_output_stops_training_with_a_clear_error(
    instance, make, match, in_query
) -> None:
    hook = "query_at_params" if in_query else "step"
    with pytest.raises(HookError, match=rf"^{hook}\(\) .*" + match):
        train(instance, 2, Returns(make, in_query=in_query), settings=ONE_EPOCH)


def test_step_context_is_frozen() -> None:
    ctx = StepContext(0, 0, 0, None, None, 128)
    with pytest.raises(AttributeError):
        ctx.epoch = 1  # type: ignore[misc]

"""Optimizers: one table drives the shared contract tests; then the registry.

To add an optimizer to the contract tests, append a :class:`Case` to
``OPTIMIZERS``: its spec (as ``nnopt run --optimizer`` takes it), a few
hyperparameter sets that must be rejected with ``ValueError``, and, for an
optional extra, the module to import (the entry is skipped without it).
"""

from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from nnopt.api import HookError, OptimizerSetup, StepContext
from nnopt.data import Instance
from nnopt.loop import LoopSettings, TrainResult, evaluate_loss, train
from nnopt.model import MLP
from nnopt.optimizers import registry
from nnopt.optimizers.registry import (
    OptimizerEntry,
    OptimizerSpec,
    list_optimizers,
    load_optimizer,
    parse_spec,
)
from nnopt.optimizers.template import TemplateOptimizer
from nnopt.optimizers.torch_adapter import TorchOptimizer


class NesterovTemplate(TemplateOptimizer):
    """The template with a lookahead proposal: a test optimizer that proposes.

    On even batches it takes the gradient at ``p - lr * momentum * m``
    (Nesterov momentum), which exercises ``query_at_params`` in the contract
    tests. Only on even batches: the harness undoes the running-statistic
    update of every batch trained at a proposal, as TIG does, so an optimizer
    proposing on every batch leaves BatchNorm's running statistics at their
    initial values and the validation loss (eval mode) barely moves.
    """

    def query_at_params(self, state, params, ctx):
        if ctx.batch % 2:
            return None
        return [
            p if m is None else p - self.lr * self.momentum * m
            for p, m in zip(params, state.momentum)
        ]


@dataclass(frozen=True)
class Case:
    """One optimizer under the contract tests."""

    spec: str  # registry name, module:attribute or file.py, with :k=v,...
    bad_hparams: tuple[dict[str, Any], ...]  # each must raise ValueError
    requires: str | None = None  # module to import, else the case is skipped
    factory: Callable[..., Any] | None = None  # build without the registry
    n_hidden: int = 2
    epochs: int = 10  # for the "a short run improves" check
    improvement: float = 0.9  # best val loss must be below this x initial
    hparams: dict[str, Any] = field(default_factory=dict)  # for every run

    @property
    def id(self) -> str:
        return self.spec


OPTIMIZERS: list[Case] = [
    Case("template", ({"lr": 0.0}, {"momentum": 1.0})),
    Case("sgd", ({"lr": -1.0}, {"momentum": -0.5})),
    Case("adam", ({"lr": -1.0}, {"beta1": 1.5}, {"eps": -1.0})),
    Case("adamw", ({"weight_decay": -1.0}, {"lr": -1e-3})),
    Case(
        "nesterov-template (test-only)",
        ({"lr": -1.0},),
        factory=NesterovTemplate,
        improvement=0.95,  # stale running statistics slow it; see its docstring
    ),
]


def build(case: Case, **hparams: Any) -> Any:
    """The case's optimizer, built as ``nnopt run`` would build it."""
    if case.requires:
        pytest.importorskip(case.requires)
    merged = {**case.hparams, **hparams}
    if case.factory is None:
        return load_optimizer(case.spec, **merged)
    try:
        return case.factory(**merged)
    except TypeError as exc:  # load_optimizer turns these into ValueError
        raise ValueError(str(exc)) from exc


def run(case: Case, instance: Instance, optimizer: Any, epochs: int) -> TrainResult:
    return train(
        instance, case.n_hidden, optimizer, settings=LoopSettings(max_epochs=epochs)
    )


def same_run(a: TrainResult, b: TrainResult) -> bool:
    if [(r.train_loss, r.val_loss) for r in a.history] != [
        (r.train_loss, r.val_loss) for r in b.history
    ]:
        return False
    return all(torch.equal(t, b.solution[k]) for k, t in a.solution.items())


class HookSpy:
    """Wraps an optimizer and checks the harness's side of every hook call.

    Hooks must not write into the tensors they are handed; after a batch
    trained at a proposal, every tensor (running statistics included) must be
    back where it was before the proposal.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.proposals = 0
        self.before_query: list[torch.Tensor] = []
        self.proposed = False

    def init_state(self, setup: OptimizerSetup) -> Any:
        self.infos = setup.tensors
        return self.inner.init_state(setup)

    def query_at_params(
        self, state: Any, params: Sequence[torch.Tensor], ctx: StepContext
    ) -> Any:
        self.before_query = [p.clone() for p in params]
        query = getattr(self.inner, "query_at_params", None)
        proposal = None if query is None else query(state, params, ctx)
        self.check_untouched(params, self.before_query, "query_at_params")
        self.proposed = proposal is not None
        if self.proposed:
            self.proposals += 1
            proposal = [p.clone() for p in proposal]  # the spy's own copy
        return proposal

    def step(
        self,
        state: Any,
        params: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor],
        ctx: StepContext,
    ) -> Any:
        for info, before, now in zip(self.infos, self.before_query, params):
            running = info.role in ("bn_running_mean", "bn_running_var")
            if self.proposed or not running:
                assert torch.equal(before, now), (
                    f"{info.name} at step {ctx.step} differs from before the batch"
                )
        params_before = [p.clone() for p in params]
        grads_before = [g.clone() for g in grads]
        updates = self.inner.step(state, params, grads, ctx)
        self.check_untouched(params, params_before, "step")
        self.check_untouched(grads, grads_before, "step (gradients)")
        return updates

    def check_untouched(
        self,
        tensors: Sequence[torch.Tensor],
        before: Sequence[torch.Tensor],
        hook: str,
    ) -> None:
        for info, b, t in zip(self.infos, before, tensors):
            assert torch.equal(b, t), f"{hook} wrote into {info.name}"


def initial_val_loss(instance: Instance, n_hidden: int) -> float:
    p = instance.profile
    model = MLP(p.n_inputs, p.n_outputs, n_hidden)
    model.init_weights(instance.seed)
    x, _, y = instance.split("val")
    return evaluate_loss(model, torch.as_tensor(x), torch.as_tensor(y))


cases = pytest.mark.parametrize("case", OPTIMIZERS, ids=lambda c: c.id)


@cases
def test_same_seed_gives_the_same_result(case, instance) -> None:
    optimizer = build(case)
    first = run(case, instance, optimizer, 3)
    again = run(case, instance, optimizer, 3)  # state must live in init_state's
    fresh = run(case, instance, build(case), 3)
    assert same_run(first, again)
    assert same_run(first, fresh)


@cases
def test_hooks_leave_harness_tensors_alone_and_proposals_are_restored(
    case, instance
) -> None:
    spy = HookSpy(build(case))
    result = run(case, instance, spy, 2)
    assert spy.proposals == sum(r.proposals for r in result.history)
    if case.factory is NesterovTemplate:
        assert spy.proposals == 8


@cases
def test_bad_hyperparameters_raise_value_error(case) -> None:
    for bad in case.bad_hparams:
        with pytest.raises(ValueError):
            build(case, **bad)
    with pytest.raises(ValueError):
        build(case, no_such_hyperparameter=1)


@cases
def test_a_short_run_improves_the_validation_loss(case, instance) -> None:
    result = run(case, instance, build(case), case.epochs)
    start = initial_val_loss(instance, case.n_hidden)
    assert not result.diverged
    assert math.isfinite(result.best_val_loss)
    assert result.best_val_loss < case.improvement * start, (
        f"best val {result.best_val_loss:.4f} vs initial {start:.4f}"
    )


# --- the registry: names, module:attribute, files, hyperparameters ---


def test_builtin_names_are_registered() -> None:
    names = {e.name for e in list_optimizers()}
    assert {"template", "sgd", "adam", "adamw"} <= names
    assert all(e.description for e in list_optimizers())
    assert [e.name for e in list_optimizers()] == sorted(names)


@pytest.mark.parametrize(
    ("text", "ref", "hparams"),
    [
        ("adam", "adam", {}),
        (" adam ", "adam", {}),
        ("adam:lr=3e-3", "adam", {"lr": 0.003}),
        (
            "adamw:lr=3e-3,weight_decay=0.01",
            "adamw",
            {"lr": 0.003, "weight_decay": 0.01},
        ),
        ("sgd:nesterov=true,momentum=0.9", "sgd", {"nesterov": True, "momentum": 0.9}),
        ("x:mode=fast", "x", {"mode": "fast"}),
        ("x:n=3", "x", {"n": 3}),
        ("adam:betas=[0.9,0.99]", "adam", {"betas": [0.9, 0.99]}),
        ("adam:betas=[0.9,0.99],lr=1e-3", "adam", {"betas": [0.9, 0.99], "lr": 1e-3}),
        ("pkg.mod:Attr", "pkg.mod:Attr", {}),
        ("pkg.mod:Attr:lr=1", "pkg.mod:Attr", {"lr": 1}),
        ("dir/my_opt.py", "dir/my_opt.py", {}),
        ("dir/my_opt.py:lr=0.5", "dir/my_opt.py", {"lr": 0.5}),
        ("dir/my_opt.py:Make:lr=0.5", "dir/my_opt.py:Make", {"lr": 0.5}),
    ],
)
def test_parse_spec(text, ref, hparams) -> None:
    spec = parse_spec(text)
    assert spec == OptimizerSpec(ref, hparams)
    assert parse_spec(spec.label) == spec


def test_parse_spec_extra_hparams_win() -> None:
    spec = parse_spec("adam:lr=1", lr=2, eps=1e-6)
    assert spec.hparams == {"lr": 2, "eps": 1e-6}
    assert parse_spec(spec, lr=3).hparams == {"lr": 3, "eps": 1e-6}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "optimizer spec is empty"),
        ("   ", "optimizer spec is empty"),
        ("adam:lr=1,oops", "bad hyperparameter 'oops'"),
        ("adam:=1", "bad hyperparameter '=1'"),
    ],
)
def test_parse_spec_errors(text, match) -> None:
    with pytest.raises(ValueError, match=match):
        parse_spec(text)


def test_load_by_name_with_hyperparameters() -> None:
    opt = load_optimizer("adamw:lr=3e-3,weight_decay=0.05")
    assert isinstance(opt, TorchOptimizer)
    assert opt.optimizer_class is torch.optim.AdamW
    assert opt.hparams["lr"] == 3e-3
    assert opt.hparams["weight_decay"] == 0.05
    adam = load_optimizer("adam:beta1=0.8,beta2=0.95")
    assert adam.hparams["betas"] == (0.8, 0.95)
    assert load_optimizer("adam:betas=[0.8,0.95]").hparams["betas"] == (0.8, 0.95)
    template = load_optimizer("template", lr=0.01)
    assert (template.lr, template.momentum) == (0.01, 0.9)


def test_load_by_module_attribute() -> None:
    opt = load_optimizer("nnopt.optimizers.template:TemplateOptimizer:lr=0.01")
    assert isinstance(opt, TemplateOptimizer)
    assert opt.lr == 0.01
    opt = load_optimizer("nnopt.optimizers.template:TemplateOptimizer")
    assert opt.lr == 1e-4


OPTIMIZER_FILE = """
    import sys

    from nnopt.optimizers.template import TemplateOptimizer


    class Optimizer(TemplateOptimizer):
        pass


    def make(lr=1e-4, momentum=0.0):
        return TemplateOptimizer(lr=lr, momentum=momentum)


    ready = TemplateOptimizer(lr=0.125)


    # A module can be the optimizer: its functions are the hooks.
    def init_state(setup):
        return {"steps": 0}


    def step(state, params, grads, ctx):
        state["steps"] += 1
        return [None] * len(params)


    module = sys.modules[__name__]
"""


@pytest.fixture
def optimizer_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_opt.py"
    path.write_text(textwrap.dedent(OPTIMIZER_FILE))
    return path


def test_load_from_a_python_file(optimizer_file, instance) -> None:
    opt = load_optimizer(str(optimizer_file))
    assert type(opt).__name__ == "Optimizer"
    assert opt.lr == 1e-4
    assert load_optimizer(f"{optimizer_file}:lr=0.5").lr == 0.5
    made = load_optimizer(f"{optimizer_file}:make:lr=0.25,momentum=0.5")
    assert (made.lr, made.momentum) == (0.25, 0.5)
    assert load_optimizer(f"{optimizer_file}:ready").lr == 0.125
    module = load_optimizer(f"{optimizer_file}:module")
    result = train(instance, 2, module, settings=LoopSettings(max_epochs=1))
    assert result.epochs_run == 1


def test_file_defining_only_an_optimizer_object(tmp_path) -> None:
    path = tmp_path / "obj.py"
    path.write_text(
        "from nnopt.optimizers.template import TemplateOptimizer\n"
        "optimizer = TemplateOptimizer(lr=0.5)\n"
    )
    assert load_optimizer(str(path)).lr == 0.5


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("no-such-optimizer", "unknown optimizer 'no-such-optimizer'.*adam"),
        ("{tmp}/missing.py", "missing.py does not exist"),
        ("{tmp}/my_opt.py:nothing", "defines none of nothing"),
        ("{tmp}/my_opt.py:ready:lr=1", "takes no hyperparameters"),
        ("no_such_module_xyz:Opt", "cannot import module 'no_such_module_xyz'"),
        ("nnopt.optimizers.template:Nope", "has no attribute 'Nope'"),
        ("adam:no_such_hparam=1", "bad hyperparameters for optimizer 'adam'"),
    ],
)
def test_load_errors(optimizer_file, spec, match) -> None:
    with pytest.raises(ValueError, match=match):
        load_optimizer(spec.format(tmp=optimizer_file.parent))


def test_file_without_a_default_name(tmp_path) -> None:
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(ValueError, match="defines none of optimizer, Optimizer"):
        load_optimizer(str(path))


@pytest.mark.parametrize("spec", ["builtins:dict", "math:pi"])
def test_objects_without_hooks_are_not_usable(spec) -> None:
    with pytest.raises(HookError, match="is not usable"):
        load_optimizer(spec)


def test_missing_extra_package_names_the_pip_extra(monkeypatch) -> None:
    def needs_package(**kw):
        import nnopt_no_such_package  # noqa: F401

    entry = OptimizerEntry("needs-extra", needs_package, "test", "nnopt[extras]")
    registry.list_optimizers()  # load the builtins first
    monkeypatch.setitem(registry._REGISTRY, "needs-extra", entry)
    with pytest.raises(ValueError, match=r"pip install 'nnopt\[extras\]'"):
        load_optimizer("needs-extra")
    assert "nnopt_no_such_package" not in sys.modules

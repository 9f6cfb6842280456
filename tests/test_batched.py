"""The batched engine against its reference, the one-at-a-time loop.

Every instance of a batched run must give what ``nnopt.loop.train`` gives for
it alone. On CPU the engine runs each instance's arithmetic with the same
kernels as the loop, so results agree to the last bit; the tolerances below
only admit rounding, and training amplifies any rounding within a few steps,
so a real difference cannot hide behind them. Step-by-step checks recompute
every batch with ``MLP.forward`` at the engine's own parameters, which holds
on any device; the ``cuda`` tests repeat them on a GPU when there is one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

from nnopt.api import BatchedStepContext, HookError, OptimizerSetup, StepContext
from nnopt.batched import (
    BatchedModel,
    BatchedTrainer,
    check_batched_optimizer,
    train_batched,
)
from nnopt.bench.batched_backend import BatchedBackend, group_jobs
from nnopt.bench.jobs import Job, run_job
from nnopt.data import Instance, generate_instance
from nnopt.loop import LoopSettings, TrainResult, train
from nnopt.model import MLP, derive_generator
from nnopt.optimizers.registry import load_optimizer, parse_spec
from nnopt.optimizers.torch_adapter import ELEMENTWISE_OPTIMIZERS, TorchOptimizer

N_HIDDEN = 3
SEEDS = ("batched-0", "batched-1", "batched-2")
SHORT = LoopSettings(max_epochs=3)


def needs_cuda(test: Callable[..., None]) -> Callable[..., None]:
    """Mark a test ``cuda`` and skip it cleanly where no GPU is present."""
    skip = pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device"
    )
    return pytest.mark.cuda(skip(test))


@pytest.fixture(scope="module")
def instances() -> list[Instance]:
    return [generate_instance(seed) for seed in SEEDS]


def one_at_a_time(
    instances: Sequence[Instance],
    make_optimizer: Callable[[], Any],
    settings: LoopSettings,
    device: str = "cpu",
) -> list[TrainResult]:
    return [
        train(inst, N_HIDDEN, make_optimizer(), device=device, settings=settings)
        for inst in instances
    ]


def assert_same_results(
    got: Sequence[TrainResult],
    want: Sequence[TrainResult],
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    assert len(got) == len(want)
    for b, (g, w) in enumerate(zip(got, want)):
        label = f"instance {b}"
        assert g.epochs_run == w.epochs_run, label
        assert g.epochs_used == w.epochs_used, label
        assert g.stop_reason == w.stop_reason, label
        assert g.diverged == w.diverged, label
        assert [r.improved for r in g.history] == [r.improved for r in w.history]
        assert [r.patience_left for r in g.history] == [
            r.patience_left for r in w.history
        ]
        assert [r.proposals for r in g.history] == [r.proposals for r in w.history]
        for name in ("train_loss", "val_loss", "best_val_loss"):
            got_curve = [getattr(r, name) for r in g.history]
            want_curve = [getattr(r, name) for r in w.history]
            assert got_curve == pytest.approx(want_curve, rel=rtol, nan_ok=True), (
                f"{label} {name}"
            )
        assert sorted(g.solution) == sorted(w.solution)
        for name, tensor in w.solution.items():
            torch.testing.assert_close(
                g.solution[name].cpu(),
                tensor.cpu(),
                rtol=rtol,
                atol=atol,
                msg=f"{label} {name}",
            )


# -- equal to the one-at-a-time loop ------------------------------------------


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "template"])
def test_each_instance_matches_the_one_at_a_time_loop(instances, name) -> None:
    want = one_at_a_time(instances, lambda: load_optimizer(name), SHORT)
    got = train_batched(instances, N_HIDDEN, load_optimizer(name), settings=SHORT)
    assert_same_results(got, want)


def test_instances_per_pass_changes_nothing(instances) -> None:
    whole = train_batched(instances, N_HIDDEN, load_optimizer("adam"), settings=SHORT)
    one_by_one = train_batched(
        instances,
        N_HIDDEN,
        load_optimizer("adam"),
        settings=SHORT,
        instances_per_pass=1,
    )
    assert_same_results(one_by_one, whole, rtol=0, atol=0)


def test_init_is_mlp_init_for_each_seed(instances) -> None:
    model = BatchedModel(1, 2, N_HIDDEN, len(instances))
    model.init_weights([inst.seed for inst in instances])
    for b, inst in enumerate(instances):
        one = MLP(1, 2, N_HIDDEN)
        one.init_weights(inst.seed)
        for stacked, p in zip(model.params, one.params):
            assert torch.equal(stacked[b], p)


def test_spec_profile_matches_too() -> None:
    spec = [generate_instance(seed, "spec") for seed in SEEDS[:2]]
    settings = LoopSettings(max_epochs=2)
    want = one_at_a_time(spec, lambda: load_optimizer("adam"), settings)
    got = train_batched(spec, N_HIDDEN, load_optimizer("adam"), settings=settings)
    assert_same_results(got, want)


# -- per-instance stopping, freezing, divergence, proposals ------------------


class BothModes:
    """A test optimizer written once for both modes.

    One instance is treated as a batch of one: tensors gain a leading
    dimension on the way in and lose it on the way out, so ``rule`` always
    sees ``[B, ...]`` tensors and the instances' seeds.
    """

    supports_batched = True

    def __init__(
        self,
        rule: Callable[..., list[torch.Tensor | None]],
        propose: Callable[..., list[torch.Tensor] | None] | None = None,
    ) -> None:
        self.rule = rule
        if propose is not None:
            self.propose = propose
            self.query_at_params = self._query

    def init_state(self, setup: OptimizerSetup) -> dict[str, Any]:
        batched = setup.batch_instances is not None
        seeds = setup.seeds if batched else (setup.seed,)
        return {"batched": batched, "seeds": seeds, "setup": setup}

    def _wrap(self, state, tensors):
        return tensors if state["batched"] else [t.unsqueeze(0) for t in tensors]

    def _unwrap(self, state, tensors):
        if state["batched"]:
            return tensors
        return [None if t is None else t.squeeze(0) for t in tensors]

    def _query(self, state, params, ctx):
        proposal = self.propose(state, self._wrap(state, params), ctx)
        return None if proposal is None else self._unwrap(state, proposal)

    def step(self, state, params, grads, ctx):
        updates = self.rule(
            state, self._wrap(state, params), self._wrap(state, grads), ctx
        )
        return self._unwrap(state, updates)


def descend(lr: float) -> Callable[..., list[torch.Tensor | None]]:
    def rule(state, params, grads, ctx):
        setup = state["setup"]
        return [-lr * g if t.trainable else None for t, g in zip(setup.tensors, grads)]

    return rule


def test_instances_stop_on_their_own_and_stay_frozen(instances) -> None:
    # A demanding min_delta makes the instances stop at different epochs.
    settings = LoopSettings(max_epochs=12, patience=2, min_delta=0.02)
    make = lambda: BothModes(descend(3e-5))  # noqa: E731
    want = one_at_a_time(instances, make, settings)
    assert len({r.epochs_run for r in want}) > 1, "instances should stop apart"

    trainer = BatchedTrainer(instances, N_HIDDEN, make(), settings=settings)
    at_stop: dict[int, list[torch.Tensor]] = {}

    def on_epoch(b: int, record) -> None:
        if record.patience_left <= 0:
            at_stop[b] = [p[b].clone() for p in trainer.model.params]

    got = trainer.run(on_epoch)
    assert_same_results(got, want)
    stopped_early = [b for b, r in enumerate(want) if r.stop_reason == "patience"]
    assert stopped_early
    for b in stopped_early:
        for frozen, p in zip(at_stop[b], trainer.model.params):
            assert torch.equal(frozen, p[b]), "a stopped instance changed"


def test_a_diverging_instance_stops_alone(instances) -> None:
    doomed = bytes(instances[1].seed)

    def rule(state, params, grads, ctx):
        updates = descend(3e-5)(state, params, grads, ctx)
        if ctx.epoch == 1:
            hit = torch.tensor([s == doomed for s in state["seeds"]])
            for i, u in enumerate(updates):
                if u is not None:
                    mask = hit.view(-1, *([1] * (u.dim() - 1))).to(u.device)
                    updates[i] = torch.where(mask, torch.nan, u)
        return updates

    settings = LoopSettings(max_epochs=4)
    want = one_at_a_time(instances, lambda: BothModes(rule), settings)
    got = train_batched(instances, N_HIDDEN, BothModes(rule), settings=settings)
    assert [r.diverged for r in want] == [False, True, False]
    assert_same_results(got, want)
    assert all(math.isfinite(float(t.sum())) for t in got[1].solution.values())


def test_proposals_are_restored_running_statistics_included(instances) -> None:
    def propose(state, params, ctx):
        if ctx.batch % 2:
            return None
        setup = state["setup"]
        out = []
        for info, p in zip(setup.tensors, params):
            if info.role == "bn_running_var":
                out.append(p * 2.0)
            elif info.trainable:
                out.append(p + 0.01 * torch.sign(p))
            else:
                out.append(p.clone())
        return out

    make = lambda: BothModes(descend(3e-5), propose)  # noqa: E731
    want = one_at_a_time(instances, make, SHORT)
    got = train_batched(instances, N_HIDDEN, make(), settings=SHORT)
    assert all(r.proposals == 4 for r in got[0].history)
    assert_same_results(got, want)


def test_losses_in_the_context_are_per_instance(instances) -> None:
    seen: list[BatchedStepContext] = []

    def rule(state, params, grads, ctx):
        seen.append(ctx)
        return descend(3e-5)(state, params, grads, ctx)

    results = train_batched(
        instances, N_HIDDEN, BothModes(rule), settings=LoopSettings(max_epochs=2)
    )
    first, later = seen[0], seen[-1]
    assert isinstance(first, BatchedStepContext)
    assert first.train_loss is None and first.val_loss is None
    assert first.active == (True, True, True)
    assert later.epoch == 1
    assert later.train_loss == tuple(r.history[0].train_loss for r in results)
    assert later.val_loss == tuple(r.history[0].val_loss for r in results)
    one = later.instance(2)
    assert isinstance(one, StepContext)
    assert one.val_loss == results[2].history[0].val_loss


# -- step by step against MLP.forward (any device) ---------------------------


class StepRecorder:
    """Records, for each step, the parameters before the forward and the grads."""

    supports_batched = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.before: list[list[torch.Tensor]] = []
        self.grads: list[list[torch.Tensor]] = []

    def init_state(self, setup):
        return self.inner.init_state(setup)

    def query_at_params(self, state, params, ctx):
        self.before.append([p.detach().cpu().clone() for p in params])
        return None

    def step(self, state, params, grads, ctx):
        self.grads.append([g.detach().cpu().clone() for g in grads])
        return self.inner.step(state, params, grads, ctx)


def check_steps_against_mlp(instances: Sequence[Instance], device: str) -> None:
    """Each step's gradient and running statistics, recomputed with the MLP."""
    recorder = StepRecorder(load_optimizer("adam"))
    settings = LoopSettings(max_epochs=2)
    train_batched(instances, N_HIDDEN, recorder, device=device, settings=settings)
    n_train = instances[0].profile.n_train
    for b, inst in enumerate(instances):
        gen = derive_generator(inst.seed, "shuffle")
        x, _, y = inst.split("train")
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        step = 0
        for _ in range(settings.max_epochs):
            order = torch.randperm(n_train, generator=gen)
            for start in range(0, n_train, 128):
                idx = order[start : start + 128]
                model = MLP(1, 2, N_HIDDEN)
                for p, q in zip(model.params, recorder.before[step]):
                    p.copy_(q[b])
                trainable = [model.params[i] for i in model.trainable_indices]
                for p in trainable:
                    p.requires_grad_(True)
                diff = model.forward(x[idx], training=True) - y[idx]
                grads = torch.autograd.grad((diff * diff).sum(), trainable)
                for i, g in zip(model.trainable_indices, grads):
                    got = recorder.grads[step][i][b]
                    scale = float(g.abs().max()) + 1e-12
                    torch.testing.assert_close(
                        got, g, rtol=1e-4, atol=1e-5 * scale, msg=f"step {step} {i}"
                    )
                if step + 1 < len(recorder.before):
                    for info, p in zip(model.infos, model.params):
                        if info.role.startswith("bn_running"):
                            after = recorder.before[step + 1][info.index][b]
                            torch.testing.assert_close(
                                after, p.detach(), rtol=1e-4, atol=1e-6
                            )
                step += 1


def test_every_step_matches_the_mlp_on_cpu(instances) -> None:
    check_steps_against_mlp(instances, "cpu")


# -- who may run batched -----------------------------------------------------


class NoOptIn:
    def init_state(self, setup):
        return None

    def step(self, state, params, grads, ctx):
        return [None] * len(params)


def test_an_optimizer_without_the_opt_in_is_refused(instances) -> None:
    with pytest.raises(HookError, match=r"'mine' \(NoOptIn\).*without --batched"):
        train_batched(instances, N_HIDDEN, NoOptIn(), settings=SHORT, name="'mine'")


def test_torch_optimizers_that_are_not_elementwise_are_refused() -> None:
    check_batched_optimizer(TorchOptimizer(torch.optim.Adam, lr=1e-3))
    with pytest.raises(HookError, match=r"torch\.optim\..*Adafactor.*elementwise=True"):
        check_batched_optimizer(TorchOptimizer(torch.optim.Adafactor))
    with pytest.raises(HookError, match="does not support batched mode"):
        check_batched_optimizer(
            TorchOptimizer(torch.optim.Adam, lr=1e-3, elementwise=False)
        )
    vouched = TorchOptimizer(torch.optim.Adafactor, elementwise=True)
    check_batched_optimizer(vouched)

    class MyAdam(torch.optim.Adam):
        pass

    with pytest.raises(HookError):
        check_batched_optimizer(TorchOptimizer(MyAdam, lr=1e-3))


@pytest.mark.parametrize(
    "optimizer_class", ELEMENTWISE_OPTIMIZERS, ids=lambda c: c.__name__
)
def test_elementwise_torch_optimizers_step_stacks_like_instances(
    optimizer_class,
) -> None:
    model = MLP(1, 2, N_HIDDEN)
    n = 3
    hparams = {"lr": 1e-2, "weight_decay": 1e-3}

    def setup(batch: int | None) -> OptimizerSetup:
        return OptimizerSetup(
            seed=b"x",
            tensors=model.infos,
            device=torch.device("cpu"),
            n_hidden=N_HIDDEN,
            n_train=1000,
            batch_size=128,
            max_epochs=10,
            steps_per_epoch=8,
            batch_instances=batch,
        )

    gen = torch.Generator().manual_seed(0)
    stacked_opt = TorchOptimizer(optimizer_class, **hparams)
    alone_opts = [TorchOptimizer(optimizer_class, **hparams) for _ in range(n)]
    stacked_state = stacked_opt.init_state(setup(n))
    alone_states = [o.init_state(setup(None)) for o in alone_opts]
    params = [torch.randn((n, *i.shape), generator=gen) for i in model.infos]
    for step in range(3):
        grads = [torch.randn(p.shape, generator=gen) for p in params]
        ctx = BatchedStepContext(0, step, step, None, None, 128, (True,) * n)
        stacked = stacked_opt.step(stacked_state, params, grads, ctx)
        for b in range(n):
            alone = alone_opts[b].step(
                alone_states[b],
                [p[b] for p in params],
                [g[b] for g in grads],
                ctx.instance(b),
            )
            for u, v in zip(stacked, alone):
                assert (u is None) == (v is None)
                if u is not None:
                    torch.testing.assert_close(u[b], v, rtol=1e-6, atol=1e-7)
        params = [p + (u if u is not None else 0) for p, u in zip(params, stacked)]


def test_updates_without_the_instance_dimension_are_refused(instances) -> None:
    def rule(state, params, grads, ctx):
        return [None if g is None else -1e-5 * g[0] for g in grads]

    with pytest.raises(HookError, match=r"expected \(3, "):
        train_batched(instances, N_HIDDEN, BothModes(rule), settings=SHORT)


def test_instances_of_different_shapes_are_refused(instances) -> None:
    mixed = [instances[0], generate_instance(SEEDS[1], "spec")]
    with pytest.raises(ValueError, match="same data shape"):
        train_batched(mixed, N_HIDDEN, load_optimizer("adam"), settings=SHORT)


# -- on a GPU ----------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("name", ["adam", "template"])
def test_cuda_batched_runs_and_agrees_in_distribution(instances, name) -> None:
    settings = LoopSettings(max_epochs=3)
    got = train_batched(
        instances, N_HIDDEN, load_optimizer(name), device="cuda", settings=settings
    )
    want = one_at_a_time(instances, lambda: load_optimizer(name), settings)
    for g, w in zip(got, want):
        assert g.epochs_run == w.epochs_run
        assert all(t.device.type == "cuda" for t in g.solution.values())
        # Rounding differs on a GPU and training amplifies it; the losses
        # still land in the same place.
        assert g.best_val_loss == pytest.approx(w.best_val_loss, rel=0.2)


@needs_cuda
def test_cuda_every_step_matches_the_mlp(instances) -> None:
    check_steps_against_mlp(instances, "cuda")


@needs_cuda
def test_cuda_one_at_a_time_loop_runs(instances) -> None:
    settings = LoopSettings(max_epochs=2)
    on_gpu = train(
        instances[0], N_HIDDEN, load_optimizer("adam"), device="cuda", settings=settings
    )
    on_cpu = train(instances[0], N_HIDDEN, load_optimizer("adam"), settings=settings)
    assert on_gpu.epochs_run == 2
    assert on_gpu.best_val_loss == pytest.approx(on_cpu.best_val_loss, rel=0.2)


# -- the bench backend -------------------------------------------------------

TINY = LoopSettings(max_epochs=2)


def bench_jobs(spec: str, seeds: Sequence[str], n_hidden: int = 2) -> list[Job]:
    return [Job(parse_spec(spec), n_hidden, seed, loop=TINY) for seed in seeds]


def without_time(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "wall_time_s"}


def test_backend_rows_are_run_job_rows() -> None:
    jobs = bench_jobs("adam", SEEDS)
    rows: list[dict[str, Any]] = []
    BatchedBackend(workers=1, batch_size=2).run(jobs, rows.append)
    want = [run_job(job) for job in jobs]
    assert sorted(r["key"] for r in rows) == sorted(r["key"] for r in want)
    by_key = {r["key"]: r for r in rows}
    for row in want:
        got = by_key[row["key"]]
        assert got["status"] == "ok"
        assert sorted(got) == sorted(row)
        assert without_time(got) == without_time(row)  # bit for bit on CPU
        assert got["wall_time_s"] > 0


def test_backend_groups_by_everything_but_the_seed() -> None:
    jobs = (
        bench_jobs("adam", SEEDS)
        + bench_jobs("adam:lr=0.002", SEEDS)
        + bench_jobs("adam", SEEDS, n_hidden=3)
    )
    groups = group_jobs(jobs)
    assert [len(g) for g in groups] == [3, 3, 3]
    assert all(len({(j.optimizer.label, j.n_hidden) for j in g}) == 1 for g in groups)


def test_an_unbatchable_optimizer_runs_one_at_a_time(caplog) -> None:
    jobs = [
        Job(parse_spec("adam:elementwise=false"), 2, seed, loop=TINY)
        for seed in SEEDS[:2]
    ]
    rows: list[dict[str, Any]] = []
    with caplog.at_level("WARNING"):
        BatchedBackend(workers=1).run(jobs, rows.append)
    assert "optimizer 'adam'" in caplog.text and "one at a time" in caplog.text
    assert [without_time(r) for r in rows] == [
        without_time(run_job(job)) for job in jobs
    ]


def test_a_failing_group_gives_error_rows() -> None:
    rows: list[dict[str, Any]] = []
    BatchedBackend(workers=1).run(bench_jobs("adam:lr=-1", SEEDS[:2]), rows.append)
    assert [r["status"] for r in rows] == ["error", "error"]
    assert all("Invalid learning rate" in r["error"] for r in rows)


@pytest.mark.slow
def test_backend_worker_processes_give_the_same_rows() -> None:
    jobs = bench_jobs("adam", SEEDS)
    inline: list[dict[str, Any]] = []
    pooled: list[dict[str, Any]] = []
    BatchedBackend(workers=1).run(jobs, inline.append)
    BatchedBackend(workers=2).run(jobs, pooled.append)
    key = lambda r: r["key"]  # noqa: E731
    assert [without_time(r) for r in sorted(pooled, key=key)] == [
        without_time(r) for r in sorted(inline, key=key)
    ]


def test_bench_batched_flag_matches_local_backend(tmp_path) -> None:
    """``nnopt bench --batched`` records the same results as the local backend."""
    import json

    from typer.testing import CliRunner

    from nnopt.cli import app

    def bench(out, *flags):
        args = ["bench", "--optimizers", "adam", "--tracks", "2", "--seeds", "2"]
        args += ["--max-epochs", "2", "--no-bound", "--no-plots", "--workers", "1"]
        result = CliRunner().invoke(app, [*args, "--out", str(out), *flags])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in (out / "results.jsonl").open()]
        return {r["seed"]: (r["test_loss"], r["epochs_run"]) for r in rows}

    assert bench(tmp_path / "b", "--batched") == bench(tmp_path / "l")

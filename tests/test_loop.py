"""The fixed training loop, observed through a recording optimizer.

Each test runs a few epochs at ``n_hidden = 2`` and checks one rule of TIG's
loop: what the hooks receive and when, how proposals and updates are applied,
which losses are passed on, how batches are drawn, when training stops and
which model becomes the solution.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nnopt.data import Instance, generate_instance
from nnopt.loop import LoopSettings, evaluate_loss, train
from nnopt.model import MLP, derive_generator
from nnopt.optimizers.registry import load_optimizer

N_HIDDEN = 2
BATCH_SIZES = [128] * 7 + [104]


def new_model(instance: Instance, n_hidden: int = N_HIDDEN) -> MLP:
    p = instance.profile
    return MLP(p.n_inputs, p.n_outputs, n_hidden)


def initial_state(instance: Instance, n_hidden: int = N_HIDDEN) -> list[torch.Tensor]:
    model = new_model(instance, n_hidden)
    model.init_weights(instance.seed)
    return [p.clone() for p in model.params]


def as_list(solution: dict[str, torch.Tensor], model: MLP) -> list[torch.Tensor]:
    return [solution[info.name] for info in model.infos]


def train_split(instance: Instance) -> tuple[torch.Tensor, torch.Tensor]:
    x, _, y = instance.split("train")
    return torch.as_tensor(x), torch.as_tensor(y)


def shuffle_orders(instance: Instance, epochs: int) -> list[torch.Tensor]:
    """Each epoch's order, drawn the documented way, independently of the loop."""
    gen = derive_generator(instance.seed, "shuffle")
    n = instance.profile.n_train
    return [torch.randperm(n, generator=gen) for _ in range(epochs)]


def batch_indices(order: torch.Tensor, batch: int, size: int = 128) -> torch.Tensor:
    return order[batch * size : (batch + 1) * size]


def assert_close_grads(got: torch.Tensor, want: torch.Tensor, name: str) -> None:
    """Equal up to float32 summation order, relative to the tensor's scale."""
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * scale, msg=name)


def summed_error_grads(
    model: MLP, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> list[torch.Tensor]:
    """Gradient of the summed squared error, via the mean loss times its count."""
    leaves = [
        p.clone().requires_grad_(info.trainable) for p, info in zip(params, model.infos)
    ]
    out = model.forward(x, training=True, params=leaves)
    F.mse_loss(out, y, reduction="mean").backward()
    return [
        torch.zeros_like(p) if p.grad is None else p.grad * y.numel() for p in leaves
    ]


def test_hooks_are_called_in_order_with_the_right_context(instance, recorder) -> None:
    rec = recorder()
    result = train(instance, N_HIDDEN, rec, settings=LoopSettings(max_epochs=2))

    hooks = [e.hook for e in rec.events]
    assert hooks == ["query", "step"] * 16
    steps = rec.steps()
    assert [e.ctx.epoch for e in steps] == [0] * 8 + [1] * 8
    assert [e.ctx.batch for e in steps] == list(range(8)) * 2
    assert [e.ctx.step for e in steps] == list(range(16))
    assert [e.ctx.batch_size for e in steps] == BATCH_SIZES * 2
    assert [q.ctx for q in rec.queries()] == [s.ctx for s in steps]
    assert result.epochs_run == 2
    assert result.stop_reason == "max_epochs"


def test_losses_passed_are_the_previous_epochs(instance, recorder, rules) -> None:
    rec = recorder(update=rules.descend(1e-4))
    result = train(instance, N_HIDDEN, rec, settings=LoopSettings(max_epochs=3))

    for event in rec.events:
        epoch = event.ctx.epoch
        if epoch == 0:
            assert event.ctx.train_loss is None
            assert event.ctx.val_loss is None
        else:
            assert event.ctx.train_loss == result.history[epoch - 1].train_loss
            assert event.ctx.val_loss == result.history[epoch - 1].val_loss
    assert result.history[0].train_loss != result.history[1].train_loss


def test_setup_describes_the_run(instance, recorder) -> None:
    rec = recorder()
    train(instance, 3, rec, settings=LoopSettings(max_epochs=1))

    setup = rec.setup
    assert setup is not None
    assert setup.seed == bytes(instance.seed)
    assert setup.tensors == new_model(instance, 3).infos
    assert setup.device == torch.device("cpu")
    assert (setup.n_hidden, setup.n_train, setup.batch_size) == (3, 1000, 128)
    assert (setup.max_epochs, setup.steps_per_epoch) == (1, 8)
    assert setup.param_sizes == [math.prod(t.shape) for t in setup.tensors]
    assert all(t.trainable for t in setup.trainable)


def test_each_epoch_shuffles_with_a_fresh_permutation(
    instance, recorder, monkeypatch
) -> None:
    drawn: list[torch.Tensor] = []
    randperm = torch.randperm

    def spy(*args, **kwargs):
        out = randperm(*args, **kwargs)
        drawn.append(out.clone())
        return out

    monkeypatch.setattr(torch, "randperm", spy)
    train(instance, N_HIDDEN, recorder(), settings=LoopSettings(max_epochs=3))
    monkeypatch.undo()

    assert len(drawn) == 3
    for order in drawn:
        assert torch.equal(order.sort().values, torch.arange(1000))
    assert not torch.equal(drawn[0], drawn[1])
    assert not torch.equal(drawn[1], drawn[2])
    for order, expected in zip(drawn, shuffle_orders(instance, 3)):
        assert torch.equal(order, expected)


def test_gradient_is_that_of_the_summed_squared_error_on_the_batch(
    instance, recorder, rules
) -> None:
    rec = recorder(update=rules.descend(1e-4))
    train(instance, N_HIDDEN, rec, settings=LoopSettings(max_epochs=2))
    model = new_model(instance)
    x, y = train_split(instance)
    orders = shuffle_orders(instance, 2)

    for event in rec.steps():
        idx = batch_indices(orders[event.ctx.epoch], event.ctx.batch)
        assert idx.numel() == event.ctx.batch_size
        expected = summed_error_grads(model, event.params, x[idx], y[idx])
        for info, got, want in zip(model.infos, event.grads, expected):
            if info.trainable:
                assert_close_grads(got, want, info.name)
                assert got.abs().sum() > 0, info.name
            else:
                assert torch.equal(got, torch.zeros(info.shape)), info.name


def test_train_and_validation_losses_are_per_element_means(
    instance, recorder, rules
) -> None:
    rec = recorder(update=rules.descend(1e-4))
    result = train(
        instance,
        N_HIDDEN,
        rec,
        settings=LoopSettings(max_epochs=2),
        on_epoch=rec.on_epoch,
    )
    model = new_model(instance)
    x, y = train_split(instance)
    xv, _, yv = instance.split("val")
    orders = shuffle_orders(instance, 2)

    for epoch, record in enumerate(result.history):
        weighted, count = 0.0, 0
        for event in rec.steps():
            if event.ctx.epoch != epoch:
                continue
            idx = batch_indices(orders[epoch], event.ctx.batch)
            with torch.no_grad():
                out = model.forward(x[idx], training=True, params=event.params)
            weighted += float(F.mse_loss(out, y[idx])) * idx.numel()
            count += idx.numel()
        assert count == 1000
        assert record.train_loss == pytest.approx(weighted / count, rel=1e-5)

        with torch.no_grad():
            out = model.forward(
                torch.as_tensor(xv), training=False, params=rec.epoch_states[epoch]
            )
        val = float(F.mse_loss(out, torch.as_tensor(yv)))
        assert record.val_loss == pytest.approx(val, rel=1e-5)


def test_proposal_is_trained_at_and_then_restored(instance, recorder) -> None:
    gen = torch.Generator().manual_seed(0)

    def propose(ctx, params):
        # Move every tensor, running statistics included.
        return [p + 0.05 * torch.randn(p.shape, generator=gen) for p in params]

    rec = recorder(propose=propose)
    result = train(instance, N_HIDDEN, rec, settings=LoopSettings(max_epochs=2))
    start = initial_state(instance)
    model = new_model(instance)
    x, y = train_split(instance)
    orders = shuffle_orders(instance, 2)

    # Updates are all None, so with every batch restored nothing ever moves:
    # neither the weights nor the running statistics.
    for event in rec.events:
        for info, got, want in zip(model.infos, event.params, start):
            assert torch.equal(got, want), f"{event.hook} {event.ctx}: {info.name}"
    assert [r.proposals for r in result.history] == [8, 8]
    for info in model.infos:
        assert torch.equal(result.solution[info.name], start[info.index]), info.name

    # The gradient is taken at the proposal, not at the current parameters.
    for query, step in zip(rec.queries(), rec.steps()):
        idx = batch_indices(orders[step.ctx.epoch], step.ctx.batch)
        at_proposal = summed_error_grads(model, query.proposal, x[idx], y[idx])
        at_current = summed_error_grads(model, step.params, x[idx], y[idx])
        for i in model.trainable_indices:
            assert_close_grads(step.grads[i], at_proposal[i], str(i))
            assert not torch.allclose(step.grads[i], at_current[i], atol=1e-3)


def test_without_a_proposal_running_statistics_do_move(instance, recorder) -> None:
    rec = recorder()
    train(instance, N_HIDDEN, rec, settings=LoopSettings(max_epochs=1))
    model = new_model(instance)
    first, second = rec.queries()[0], rec.queries()[1]
    for info in model.infos:
        same = torch.equal(first.params[info.index], second.params[info.index])
        assert same == (info.role not in ("bn_running_mean", "bn_running_var"))


def test_updates_apply_to_trainable_tensors_only(instance, recorder) -> None:
    def update(ctx, params, grads):
        # Ones everywhere except every third tensor, which gets None.
        return [
            None if i % 3 == 0 else torch.ones_like(p) for i, p in enumerate(params)
        ]

    rec = recorder(update=update)
    train(instance, N_HIDDEN, rec, settings=LoopSettings(max_epochs=1))
    model = new_model(instance)

    steps, queries = rec.steps(), rec.queries()
    for before, after in zip(steps[:-1], queries[1:]):
        for info, b, a in zip(model.infos, before.params, after.params):
            if info.trainable and info.index % 3 != 0:
                assert torch.equal(a, b + 1), info.name
            else:
                assert torch.equal(a, b), info.name


def test_early_stopping_after_patience_epochs_without_improvement(
    instance, recorder, rules
) -> None:
    rec = recorder(update=rules.ascend_after(1, 1e-4, 3e-3))
    result = train(
        instance,
        N_HIDDEN,
        rec,
        settings=LoopSettings(max_epochs=20, patience=3),
        on_epoch=rec.on_epoch,
    )

    vals = [r.val_loss for r in result.history]
    assert all(v > vals[0] for v in vals[1:]), "the optimizer should make val worse"
    assert result.stop_reason == "patience"
    assert result.epochs_run == 4
    assert [r.patience_left for r in result.history] == [3, 2, 1, 0]
    assert [r.improved for r in result.history] == [True, False, False, False]
    assert result.epochs_used == 1
    assert result.best_val_loss == vals[0]
    model = new_model(instance)
    for info in model.infos:
        assert torch.equal(
            result.solution[info.name], rec.epoch_states[0][info.index]
        ), info.name


def test_improvements_below_min_delta_do_not_count(instance, recorder, rules) -> None:
    rec = recorder(update=rules.descend(1e-4))
    result = train(
        instance,
        N_HIDDEN,
        rec,
        settings=LoopSettings(max_epochs=10, patience=2, min_delta=10.0),
    )
    assert result.history[1].val_loss < result.history[0].val_loss
    assert result.epochs_run == 3
    assert result.epochs_used == 1
    assert result.stop_reason == "patience"


def test_solution_is_the_model_at_the_best_epoch(instance, recorder, rules) -> None:
    rec = recorder(update=rules.ascend_after(3, 1e-4, 1e-3))
    result = train(
        instance,
        N_HIDDEN,
        rec,
        settings=LoopSettings(max_epochs=6, patience=10),
        on_epoch=rec.on_epoch,
    )

    vals = [r.val_loss for r in result.history]
    best = min(range(len(vals)), key=vals.__getitem__)
    assert 0 < best < len(vals) - 1, "the test needs a best epoch in the middle"
    assert result.epochs_used == best + 1
    assert result.best_val_loss == vals[best]
    assert result.epochs_run == 6
    assert [r.best_val_loss for r in result.history][-1] == vals[best]
    model = new_model(instance)
    assert set(result.solution) == {info.name for info in model.infos}
    for info in model.infos:
        assert torch.equal(
            result.solution[info.name], rec.epoch_states[best][info.index]
        ), info.name
    # The saved solution is a copy, not the live tensors.
    assert not torch.equal(result.solution["linear.0.weight"], rec.epoch_states[-1][0])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_diverged_run_keeps_the_best_solution(instance, recorder, bad) -> None:
    def update(ctx, params, grads):
        rate = bad if ctx.epoch >= 2 else -1e-4
        return [rate * g for g in grads]

    rec = recorder(update=update)
    result = train(
        instance,
        N_HIDDEN,
        rec,
        settings=LoopSettings(max_epochs=10),
        on_epoch=rec.on_epoch,
    )

    assert result.diverged
    assert result.stop_reason.startswith("diverged")
    assert result.epochs_run == 3
    vals = [r.val_loss for r in result.history]
    best = min(range(2), key=vals.__getitem__)
    assert result.epochs_used == best + 1
    assert result.best_val_loss == vals[best]
    model = new_model(instance)
    for info in model.infos:
        tensor = result.solution[info.name]
        assert torch.isfinite(tensor).all(), info.name
        assert torch.equal(tensor, rec.epoch_states[best][info.index]), info.name


def test_diverged_in_the_first_epoch_keeps_the_initial_model(
    instance, recorder
) -> None:
    rec = recorder(update=lambda ctx, params, grads: [g * math.nan for g in grads])
    result = train(instance, N_HIDDEN, rec, settings=LoopSettings(max_epochs=5))

    assert result.diverged
    assert result.epochs_run == 1
    assert result.epochs_used == 0
    assert result.best_val_loss == math.inf
    model = new_model(instance)
    for info, want in zip(model.infos, initial_state(instance)):
        assert torch.equal(result.solution[info.name], want), info.name


def test_frozen_tensors_never_change(instance) -> None:
    result = train(
        instance, 3, load_optimizer("adam:lr=1e-2"), settings=LoopSettings(max_epochs=2)
    )
    model = new_model(instance, 3)
    start = initial_state(instance, 3)
    for info in model.infos:
        moved = not torch.equal(result.solution[info.name], start[info.index])
        running = info.role in ("bn_running_mean", "bn_running_var")
        assert moved == (info.trainable or running), info.name


def test_same_seed_and_optimizer_give_bit_identical_runs(instance) -> None:
    runs = [
        train(
            instance,
            N_HIDDEN,
            load_optimizer("adam"),
            settings=LoopSettings(max_epochs=3),
        )
        for _ in range(2)
    ]
    a, b = runs
    assert [(r.train_loss, r.val_loss) for r in a.history] == [
        (r.train_loss, r.val_loss) for r in b.history
    ]
    assert a.summary() | {"wall_time_s": 0} == b.summary() | {"wall_time_s": 0}
    for name, tensor in a.solution.items():
        assert torch.equal(tensor, b.solution[name]), name


def test_different_seeds_give_different_runs(instance) -> None:
    other = generate_instance("another seed", "tig")
    a = train(
        instance, N_HIDDEN, load_optimizer("adam"), settings=LoopSettings(max_epochs=1)
    )
    b = train(
        other, N_HIDDEN, load_optimizer("adam"), settings=LoopSettings(max_epochs=1)
    )
    assert a.history[0].train_loss != b.history[0].train_loss
    assert not torch.equal(a.solution["linear.0.weight"], b.solution["linear.0.weight"])


def test_on_epoch_gets_every_record(instance) -> None:
    seen = []
    result = train(
        instance,
        N_HIDDEN,
        load_optimizer("sgd"),
        settings=LoopSettings(max_epochs=3),
        on_epoch=seen.append,
    )
    assert seen == result.history
    assert [r.epoch for r in seen] == [0, 1, 2]
    assert all(r.proposals == 0 for r in seen)
    times = [r.wall_time_s for r in seen]
    assert times == sorted(times)


def test_evaluate_loss_is_independent_of_batch_size(instance) -> None:
    model = new_model(instance)
    model.init_weights(instance.seed)
    x, _, y = instance.split("val")
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    losses = [evaluate_loss(model, xt, yt, batch_size=bs) for bs in (7, 128, 200)]
    assert losses == pytest.approx([losses[0]] * 3, rel=1e-6)
    with torch.no_grad():
        direct = float(F.mse_loss(model.forward(xt, training=False), yt))
    assert losses[1] == pytest.approx(direct, rel=1e-6)


def test_the_spec_shape_trains_too(spec_instance) -> None:
    result = train(
        spec_instance,
        N_HIDDEN,
        load_optimizer("adam"),
        settings=LoopSettings(max_epochs=2),
    )
    assert result.epochs_run == 2
    assert result.solution["linear.0.weight"].shape == (256, 8)
    assert result.solution["linear.2.weight"].shape == (1, 256)


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_size": 0}, {"max_epochs": 0}, {"patience": -1}, {"min_delta": -1.0}],
)
def test_bad_loop_settings_raise(kwargs) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LoopSettings(**kwargs)

"""Crest: its math on hand-computed examples, its schedule, and a regression guard."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from nnopt.api import StepContext
from nnopt.optimizers.ours import Crest, CrestConfig, crest_update
from nnopt.optimizers.registry import load_optimizer, parse_spec
from nnopt.runner import RunConfig, run_challenge


def _ctx(epoch: int = 0, batch: int = 0, val: float | None = None) -> StepContext:
    return StepContext(epoch, batch, 0, None if val is None else 1.0, val, 128)


def test_first_step_is_signed_lr_plus_decoupled_decay() -> None:
    # Step 1 with zero moments: bias correction makes mh = g and vh = g^2, so
    # the Adam direction is sign(g); decay adds lambda * p.
    cfg = CrestConfig(lr=0.01, weight_decay=0.1)
    p = torch.tensor([1.0, -2.0])
    g = torch.tensor([0.5, -1.0])
    zeros = torch.zeros(2)
    update, m, v = crest_update(
        p, g, zeros, zeros, step=1, lr=0.01, cfg=cfg, orthogonal=False
    )
    assert torch.allclose(m, torch.tensor([0.05, -0.1]))
    assert torch.allclose(v, torch.tensor([0.00025, 0.001]))
    assert torch.allclose(update, torch.tensor([-0.011, 0.012]), atol=1e-7)
    assert torch.equal(zeros, torch.zeros(2))  # inputs untouched


def test_cautious_mask_drops_opposing_entry_and_rescales() -> None:
    cfg = CrestConfig(cautious=True)
    lr = 0.01
    g1 = torch.tensor([0.5, -1.0])
    g2 = torch.tensor([-0.1, -1.0])
    p = torch.zeros(2)
    zeros = torch.zeros(2)
    _, m, v = crest_update(
        p, g1, zeros, zeros, step=1, lr=lr, cfg=cfg, orthogonal=False
    )
    update, m, _ = crest_update(p, g2, m, v, step=2, lr=lr, cfg=cfg, orthogonal=False)
    # By hand: m = 0.9 * [0.05, -0.1] + 0.1 * [-0.1, -1] = [0.035, -0.19];
    # entry 0 points against g2 and is dropped; the mask mean is 1/2, so
    # entry 1's direction -0.19/0.19 / sqrt(0.001999/0.001999) = -1 doubles.
    assert torch.allclose(m, torch.tensor([0.035, -0.19]))
    assert torch.allclose(update, torch.tensor([0.0, 0.02]), atol=1e-6)


def test_orthogonal_direction_is_rms_matched() -> None:
    cfg = CrestConfig()
    torch.manual_seed(0)
    g = torch.randn(16, 16)
    zeros = torch.zeros(16, 16)
    update, _, _ = crest_update(
        zeros, g, zeros, zeros, step=1, lr=1.0, cfg=cfg, orthogonal=True
    )
    # Newton-Schulz leaves singular values near 1 (0.7-1.2), so the update's
    # RMS is about 0.2 * sqrt(16) / sqrt(16) = 0.2.
    rms = float(update.pow(2).mean().sqrt())
    assert 0.12 < rms < 0.25


def test_plateau_decays_then_stops() -> None:
    opt = Crest(warmup=False, plateau_patience=2, decay_factor=0.5, min_factor=0.2)
    setup = _setup()
    state = opt.init_state(setup)
    params = [torch.zeros(t.shape) for t in setup.tensors]
    grads = [torch.ones(t.shape) for t in setup.tensors]
    factors = []
    for epoch, val in enumerate([None, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]):
        updates = opt.step(state, params, grads, _ctx(epoch, 0, val))
        factors.append(state.factor)
    # Best is 1.0 from epoch 1; epochs 3, 5 and 7 each end a 2-epoch plateau.
    assert factors == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2]
    assert state.stopped
    assert all(u is None for u in updates)


@pytest.mark.parametrize(
    "bad",
    [
        {"lr": -1e-3},
        {"beta1": 1.0},
        {"decay_factor": 1.5},
        {"plateau_patience": 0},
        {"warmup": 3},
        {"warmup_epochs": "five"},
        {"average_floor": 1.0},
        {"bn_batches": -1},
        {"weight_decay": -0.1},
        {"no_such_option": 1},
    ],
)
def test_bad_hyperparameters_raise(bad: dict) -> None:
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        Crest(**bad)


def test_registered_with_switches() -> None:
    opt = load_optimizer("crest:warmup=false,plateau=false")
    assert opt.hparams == {"warmup": False, "plateau": False}


def _setup():
    from nnopt.api import OptimizerSetup
    from nnopt.model import MLP

    model = MLP(1, 2, 4)
    return OptimizerSetup(
        seed=bytes(32),
        tensors=model.infos,
        device=torch.device("cpu"),
        n_hidden=4,
        n_train=1000,
        batch_size=128,
        max_epochs=1000,
        steps_per_epoch=8,
    )


# ci-0 is left out: its second output's target has mean -1.47, which the
# frozen zero-mean readout cannot express, and every optimizer scores below
# -2 there, so it would dominate the mean (docs/optimizer_research.md).
CI_SEEDS = ["ci-1", "ci-2", "ci-3"]


def _mean_quality(spec: str) -> float:
    torch.set_num_threads(1)
    qualities = []
    for seed in CI_SEEDS:
        config = RunConfig(seed=seed, n_hidden=4, optimizer=parse_spec(spec))
        qualities.append(run_challenge(config).score.quality)
    assert all(math.isfinite(q) for q in qualities)
    return statistics.mean(qualities)


@pytest.mark.slow
def test_beats_adam_on_ci_seeds() -> None:
    """Regression guard: Crest's mean quality beats Adam (lr 1e-3)."""
    assert _mean_quality("crest") > _mean_quality("adam")


def test_averaging_proposes_y_and_moves_x_towards_z() -> None:
    opt = Crest(warmup=False, average=True, average_floor=0.0, spread_first=False)
    setup = _setup()
    state = opt.init_state(setup)
    params = [torch.full(t.shape, 0.5) for t in setup.tensors]
    grads = [torch.ones(t.shape) for t in setup.tensors]
    lr = state.cfg.lr

    # Step 1: z = x = 0.5, so y = 0.5; the weight c_1 = 1 puts x on z.
    proposal = opt.query_at_params(state, params, _ctx(0, 0))
    assert proposal is not None
    assert all(torch.allclose(q, p) for q, p in zip(proposal, params))
    updates = opt.step(state, params, grads, _ctx(0, 0))
    i = setup.tensors[2].index  # a hidden weight matrix
    assert torch.allclose(updates[i], torch.full_like(params[i], -lr), atol=1e-7)

    # Step 2: x = z = 0.5 - lr, so y is there too; z_2 = 0.5 - 2 lr and
    # c_2 = 1/2, so x moves by -lr / 2.
    params = [p + (u if u is not None else 0) for p, u in zip(params, updates)]
    proposal = opt.query_at_params(state, params, _ctx(0, 1))
    b1 = state.cfg.beta1
    expected_y = (1 - b1) * (0.5 - lr) + b1 * (0.5 - lr)
    assert torch.allclose(proposal[i], torch.full_like(params[i], expected_y))
    updates = opt.step(state, params, grads, _ctx(0, 1))
    assert torch.allclose(updates[i], torch.full_like(params[i], -lr / 2), atol=1e-7)

    # The last bn_batches batches of an epoch train at x itself.
    last = setup.steps_per_epoch - 1
    assert opt.query_at_params(state, params, _ctx(0, last)) is None


def test_spread_kinks_evenly_on_the_input_domain() -> None:
    from nnopt.optimizers.ours import spread_kinks

    weight = torch.tensor([[2.0], [-1.0], [0.0], [4.0]])
    bias = torch.zeros(4)
    new_bias = spread_kinks(weight, bias)
    # u = [-0.75, -0.25, 0.25, 0.75]; kinks -b/w land on u; w = 0 keeps b.
    assert torch.allclose(new_bias, torch.tensor([1.5, -0.25, 0.0, -3.0]))


@pytest.mark.parametrize(
    ("name", "package"),
    [
        ("schedulefree", "schedulefree"),
        ("lion", "lion_pytorch"),
        ("adan", "adan_pytorch"),
        ("prodigy", "prodigyopt"),
        ("muon", "torch"),
    ],
)
def test_extras_train_a_few_epochs(name: str, package: str) -> None:
    pytest.importorskip(package)
    from nnopt.data import generate_instance
    from nnopt.loop import LoopSettings, train

    result = train(
        generate_instance("ci-extras"),
        2,
        load_optimizer(name),
        settings=LoopSettings(max_epochs=4),
    )
    assert math.isfinite(result.best_val_loss)
    assert result.epochs_run == 4
    if name == "schedulefree":  # gradient at y except the last 2 batches
        assert [r.proposals for r in result.history] == [6, 6, 6, 6]


@pytest.mark.parametrize("average", [False, True])
def test_spread_is_applied_once(average: bool) -> None:
    # With a zero gradient and no warmup the first update is the spread alone.
    opt = Crest(warmup=False, average=average, spread_first=True)
    setup = _setup()
    state = opt.init_state(setup)
    params = [torch.zeros(t.shape) for t in setup.tensors]
    params[0] = torch.full(setup.tensors[0].shape, 0.5)  # first-layer weight
    grads = [torch.zeros(t.shape) for t in setup.tensors]
    updates = opt.step(state, params, grads, _ctx())
    n = setup.tensors[1].shape[0]
    u = torch.linspace(-1 + 1 / n, 1 - 1 / n, n)
    assert torch.allclose(updates[1], -0.5 * u, atol=1e-6)

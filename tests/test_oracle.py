"""The harness against an independent plain PyTorch training loop.

The oracle is what one would write from the challenge text with ``torch.nn``:
``nn.Sequential`` of Linear, ReLU and BatchNorm1d, the same initial weights,
the same shuffling (``derive_generator(seed, "shuffle")`` and
``torch.randperm``), ``loss.backward()`` on the summed squared error, and a
hand-written SGD or Adam update on the trainable parameters only. After
every epoch the train loss, the validation loss and every tensor (running
statistics included) must agree with the harness within float tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from nnopt.data import Instance
from nnopt.loop import LoopSettings, train
from nnopt.model import MLP, derive_generator
from nnopt.optimizers.registry import load_optimizer

EPOCHS = 3


def build_oracle(instance: Instance, n_hidden: int) -> nn.Sequential:
    """TIG's network in ``torch.nn``, loaded with the harness's initial weights."""
    p = instance.profile
    ref = MLP(p.n_inputs, p.n_outputs, n_hidden)
    ref.init_weights(instance.seed)
    widths = [p.n_inputs, *([256] * n_hidden), p.n_outputs]
    layers: list[nn.Module] = []
    for i in range(n_hidden):
        layers += [
            nn.Linear(widths[i], widths[i + 1]),
            nn.ReLU(),
            nn.BatchNorm1d(widths[i + 1], eps=1e-5, momentum=0.1),
        ]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for t, src in zip(flat_tensors(net), ref.params):
            t.copy_(src)
    # Frozen: the last two Linear layers and the last BatchNorm's affine.
    for module in (net[-1], net[-4], net[-2]):
        for param in module.parameters():
            param.requires_grad_(False)
    return net


def flat_tensors(net: nn.Sequential) -> list[torch.Tensor]:
    """TIG's order: every Linear's weight, bias; then every BatchNorm's four."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    norms = [m for m in net if isinstance(m, nn.BatchNorm1d)]
    out: list[torch.Tensor] = []
    for m in linears:
        out += [m.weight, m.bias]
    for m in norms:
        out += [m.weight, m.bias, m.running_mean, m.running_var]
    return out


@dataclass
class OracleEpoch:
    train_loss: float
    val_loss: float
    tensors: list[torch.Tensor]


class PlainSGD:
    def __init__(self, params: list[nn.Parameter], lr: float) -> None:
        self.params, self.lr = params, lr

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            p -= self.lr * p.grad


class PlainAdam:
    """Adam as in Kingma and Ba, bias-corrected, no weight decay."""

    def __init__(
        self,
        params: list[nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            m.mul_(b1).add_((1 - b1) * p.grad)
            v.mul_(b2).add_((1 - b2) * p.grad * p.grad)
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p -= self.lr * m_hat / (v_hat.sqrt() + self.eps)


def run_oracle(
    instance: Instance, n_hidden: int, make_optimizer, epochs: int
) -> list[OracleEpoch]:
    net = build_oracle(instance, n_hidden)
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable)
    x, _, y = (torch.as_tensor(a) for a in instance.split("train"))
    xv, _, yv = (torch.as_tensor(a) for a in instance.split("val"))
    gen = derive_generator(instance.seed, "shuffle")
    history = []
    for _ in range(epochs):
        net.train()
        order = torch.randperm(x.shape[0], generator=gen)
        weighted = 0.0
        for start in range(0, x.shape[0], 128):
            idx = order[start : start + 128]
            out = net(x[idx])
            loss = ((out - y[idx]) ** 2).sum()
            for p in trainable:
                p.grad = None
            loss.backward()
            optimizer.step()
            weighted += float(loss.detach()) / y.shape[1]  # = batch MSE * batch size
        net.eval()
        with torch.no_grad():
            val = float(((net(xv) - yv) ** 2).mean())
        history.append(
            OracleEpoch(
                weighted / x.shape[0],
                val,
                [t.detach().clone() for t in flat_tensors(net)],
            )
        )
    return history


class Snapshots:
    """Wraps an optimizer; copies the harness's tensors at the end of each epoch."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.views: list[torch.Tensor] = []
        self.states: list[list[torch.Tensor]] = []

    def init_state(self, setup):
        return self.inner.init_state(setup)

    def step(self, state, params, grads, ctx):
        self.views = list(params)
        return self.inner.step(state, params, grads, ctx)

    def on_epoch(self, record) -> None:
        self.states.append([v.clone() for v in self.views])


CASES = [
    pytest.param(
        "template:lr=1e-4,momentum=0",
        lambda ps: PlainSGD(ps, lr=1e-4),
        2,
        id="sgd-h2",
    ),
    pytest.param(
        "template:lr=5e-5,momentum=0",
        lambda ps: PlainSGD(ps, lr=5e-5),
        4,
        id="sgd-h4",
    ),
    pytest.param("adam", lambda ps: PlainAdam(ps, lr=1e-3), 2, id="adam-h2"),
    pytest.param("adam", lambda ps: PlainAdam(ps, lr=1e-3), 3, id="adam-h3"),
]


@pytest.mark.parametrize(("spec", "make_oracle_optimizer", "n_hidden"), CASES)
def test_harness_matches_plain_pytorch(
    instance, spec, make_oracle_optimizer, n_hidden
) -> None:
    wrapped = Snapshots(load_optimizer(spec))
    result = train(
        instance,
        n_hidden,
        wrapped,
        settings=LoopSettings(max_epochs=EPOCHS),
        on_epoch=wrapped.on_epoch,
    )
    oracle = run_oracle(instance, n_hidden, make_oracle_optimizer, EPOCHS)

    p = instance.profile
    infos = MLP(p.n_inputs, p.n_outputs, n_hidden).infos
    assert result.epochs_run == EPOCHS
    for epoch, (record, want) in enumerate(zip(result.history, oracle)):
        assert record.train_loss == pytest.approx(want.train_loss, rel=1e-4), epoch
        assert record.val_loss == pytest.approx(want.val_loss, rel=1e-4), epoch
        for info, got, exp in zip(infos, wrapped.states[epoch], want.tensors):
            scale = max(float(exp.abs().max()), 1e-3)
            torch.testing.assert_close(
                got,
                exp,
                rtol=1e-4,
                atol=1e-4 * scale,
                msg=lambda m, e=epoch, n=info.name: f"epoch {e}, {n}: {m}",
            )

    # The solution is the oracle's state at its own best epoch.
    vals = [h.val_loss for h in oracle]
    best = min(range(EPOCHS), key=vals.__getitem__)
    assert result.epochs_used == best + 1
    for info, exp in zip(infos, oracle[best].tensors):
        scale = max(float(exp.abs().max()), 1e-3)
        torch.testing.assert_close(
            result.solution[info.name], exp, rtol=1e-4, atol=1e-4 * scale
        )


def test_oracle_frozen_tensors_match_the_harness(instance) -> None:
    net = build_oracle(instance, 4)
    model = MLP(1, 2, 4)
    flags = [isinstance(t, nn.Parameter) and t.requires_grad for t in flat_tensors(net)]
    assert flags == [info.trainable for info in model.infos]
    assert sum(flags) == len(model.trainable_indices)

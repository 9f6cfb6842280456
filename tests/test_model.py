"""TIG's MLP: shapes, tensor order and roles, init, frozen tensors, forward."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nnopt.model import BN_EPS, BN_MOMENTUM, MLP, derive_generator
from nnopt.seeds import parse_seed

n_inputs = st.integers(1, 8)
n_outputs = st.integers(1, 3)
n_hiddens = st.integers(2, 6)
widths = st.integers(2, 16)


def expected_names(n_hidden: int) -> list[str]:
    names = []
    for i in range(n_hidden + 1):
        names += [f"linear.{i}.weight", f"linear.{i}.bias"]
    for j in range(n_hidden):
        names += [
            f"bn.{j}.{s}" for s in ("gamma", "beta", "running_mean", "running_var")
        ]
    return names


@given(n_inputs, n_outputs, n_hiddens, widths)
def test_tensor_list_order_shapes_and_roles(d_in, d_out, n_hidden, width) -> None:
    model = MLP(d_in, d_out, n_hidden, width=width)
    widths_ = [d_in, *([width] * n_hidden), d_out]

    assert model.widths == widths_
    assert [i.name for i in model.infos] == expected_names(n_hidden)
    assert [i.index for i in model.infos] == list(range(len(model.infos)))
    assert len(model.params) == 2 * (n_hidden + 1) + 4 * n_hidden
    for info, p in zip(model.infos, model.params):
        assert tuple(p.shape) == info.shape
        assert p.dtype == torch.float32
    for i in range(n_hidden + 1):
        w, b = model.linear_params(i)
        assert tuple(w.shape) == (widths_[i + 1], widths_[i])
        assert tuple(b.shape) == (widths_[i + 1],)
        assert model.infos[2 * i].role == "linear_weight"
        assert model.infos[2 * i + 1].role == "linear_bias"
        assert model.infos[2 * i].layer == i
    for j in range(n_hidden):
        bn = model.bn_params(j)
        base = 2 * (n_hidden + 1) + 4 * j
        assert all(t is model.params[base + k] for k, t in enumerate(bn))
        roles = [model.infos[base + k].role for k in range(4)]
        assert roles == ["bn_gamma", "bn_beta", "bn_running_mean", "bn_running_var"]
        assert all(model.infos[base + k].layer == j for k in range(4))


@given(n_inputs, n_outputs, n_hiddens, widths, st.integers(2, 9))
def test_forward_shapes(d_in, d_out, n_hidden, width, batch) -> None:
    model = MLP(d_in, d_out, n_hidden, width=width)
    model.init_weights(parse_seed(0))
    x = torch.rand(batch, d_in) * 2 - 1
    for training in (True, False):
        out = model.forward(x, training=training)
        assert out.shape == (batch, d_out)
        assert torch.isfinite(out).all()


@given(n_hiddens)
def test_frozen_tensors(n_hidden) -> None:
    model = MLP(1, 2, n_hidden, width=4)
    n_linear = n_hidden + 1
    for info in model.infos:
        if info.role.startswith("linear"):
            # The last two Linear layers are frozen.
            assert info.trainable == (info.layer < n_linear - 2), info.name
        elif info.role in ("bn_gamma", "bn_beta"):
            # So is the BatchNorm after the second-to-last Linear, which is
            # hidden layer n_hidden - 1 (the last BatchNorm).
            assert info.trainable == (info.layer < n_hidden - 1), info.name
        else:
            assert not info.trainable, info.name
    assert model.trainable_indices == tuple(i.index for i in model.infos if i.trainable)
    assert len(model.trainable_indices) == 2 * (n_hidden - 1) + 2 * (n_hidden - 1)


def test_tig_track_4_trainable_names() -> None:
    model = MLP(1, 2, 4)
    trainable = [model.infos[i].name for i in model.trainable_indices]
    assert trainable == [
        "linear.0.weight",
        "linear.0.bias",
        "linear.1.weight",
        "linear.1.bias",
        "linear.2.weight",
        "linear.2.bias",
        "bn.0.gamma",
        "bn.0.beta",
        "bn.1.gamma",
        "bn.1.beta",
        "bn.2.gamma",
        "bn.2.beta",
    ]


@pytest.mark.parametrize(("d_in", "d_out", "n_hidden"), [(1, 2, 4), (8, 1, 3)])
def test_init_distribution(d_in, d_out, n_hidden) -> None:
    model = MLP(d_in, d_out, n_hidden)
    model.init_weights(parse_seed("init"))
    for info, p in zip(model.infos, model.params):
        if info.role == "linear_weight":
            fan_out, fan_in = info.shape
            c = 0.5 * math.sqrt(2.0 / (fan_in + fan_out))
            assert p.abs().max() <= c, info.name
            if p.numel() >= 256:
                # Uniform(-c, c): mean 0, std c / sqrt(3), reaches near +-c.
                n = p.numel()
                assert abs(float(p.mean())) < 5 * c / math.sqrt(3 * n), info.name
                assert float(p.std()) == pytest.approx(c / math.sqrt(3), rel=0.1)
                assert p.abs().max() > 0.95 * c, info.name
        elif info.role in ("linear_bias", "bn_beta", "bn_running_mean"):
            assert torch.equal(p, torch.zeros(info.shape)), info.name
        else:  # gamma and running variance
            assert torch.equal(p, torch.ones(info.shape)), info.name


@given(n_inputs, n_outputs, n_hiddens, widths, st.binary(min_size=32, max_size=32))
def test_init_stays_in_range(d_in, d_out, n_hidden, width, seed) -> None:
    model = MLP(d_in, d_out, n_hidden, width=width)
    model.init_weights(seed)
    for info, p in zip(model.infos, model.params):
        if info.role == "linear_weight":
            c = 0.5 * math.sqrt(2.0 / sum(info.shape))
            assert p.abs().max() <= c


def test_init_is_seeded() -> None:
    weights = []
    for seed in ("a", "a", "b"):
        model = MLP(1, 2, 2)
        model.init_weights(parse_seed(seed))
        weights.append(model.params[0].clone())
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_init_resets_batchnorm() -> None:
    model = MLP(1, 2, 2, width=8)
    for p in model.params:
        p.fill_(3.0)
    model.init_weights(parse_seed(0))
    gamma, beta, mean, var = model.bn_params(1)
    assert torch.equal(gamma, torch.ones(8)) and torch.equal(var, torch.ones(8))
    assert torch.equal(beta, torch.zeros(8)) and torch.equal(mean, torch.zeros(8))
    assert torch.equal(model.params[1], torch.zeros(8))


def test_derive_generator_depends_on_seed_and_purpose() -> None:
    def draw(seed: str, purpose: str) -> torch.Tensor:
        return torch.rand(4, generator=derive_generator(parse_seed(seed), purpose))

    assert torch.equal(draw("s", "init"), draw("s", "init"))
    assert not torch.equal(draw("s", "init"), draw("s", "shuffle"))
    assert not torch.equal(draw("s", "init"), draw("t", "init"))


def reference_module(model: MLP) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i in range(model.n_hidden):
        linear = torch.nn.Linear(model.widths[i], model.widths[i + 1])
        bn = torch.nn.BatchNorm1d(model.widths[i + 1], eps=BN_EPS, momentum=BN_MOMENTUM)
        layers += [linear, torch.nn.ReLU(), bn]
    layers.append(torch.nn.Linear(model.widths[-2], model.widths[-1]))
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for i in range(model.n_hidden + 1):
            w, b = model.linear_params(i)
            net[3 * i].weight.copy_(w)
            net[3 * i].bias.copy_(b)
        for j in range(model.n_hidden):
            gamma, beta, mean, var = model.bn_params(j)
            bn = net[3 * j + 2]
            bn.weight.copy_(gamma)
            bn.bias.copy_(beta)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
    return net


def test_forward_matches_torch_nn_and_updates_running_stats() -> None:
    model = MLP(3, 2, 3, width=16)
    model.init_weights(parse_seed(1))
    with torch.no_grad():
        for j in range(3):
            model.bn_params(j)[0].uniform_(0.5, 1.5)
            model.bn_params(j)[1].uniform_(-0.5, 0.5)
    net = reference_module(model)
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))

    net.train()
    torch.testing.assert_close(model.forward(x, training=True), net(x))
    for j in range(3):
        _, _, mean, var = model.bn_params(j)
        torch.testing.assert_close(mean, net[3 * j + 2].running_mean)
        torch.testing.assert_close(var, net[3 * j + 2].running_var)
        assert not torch.equal(mean, torch.zeros(16))

    before = [p.clone() for p in model.params]
    net.eval()
    torch.testing.assert_close(model.forward(x, training=False), net(x))
    for b, p in zip(before, model.params):
        assert torch.equal(b, p), "eval mode must not touch running statistics"


def test_batchnorm_is_after_the_activation() -> None:
    model = MLP(1, 1, 2, width=4)
    model.init_weights(parse_seed(0))
    x = torch.linspace(-1, 1, 16).unsqueeze(1)
    model.forward(x, training=True)
    # Running means of post-ReLU activations are never negative.
    for j in range(2):
        assert (model.bn_params(j)[2] >= 0).all()
    w, b = model.linear_params(0)
    h = torch.relu(x @ w.T + b)
    expected_mean = BN_MOMENTUM * h.mean(0)
    torch.testing.assert_close(model.bn_params(0)[2], expected_mean)


def test_forward_with_explicit_params_leaves_model_alone() -> None:
    model = MLP(1, 2, 2, width=8)
    model.init_weights(parse_seed(0))
    other = [p.clone() for p in model.params]
    other[0].mul_(2)
    before = [p.clone() for p in model.params]
    x = torch.rand(5, 1)
    out_other = model.forward(x, training=True, params=other)
    assert all(torch.equal(a, b) for a, b in zip(before, model.params))
    assert not torch.equal(out_other, model.forward(x, training=True))


def test_state_dict_round_trip_and_checks() -> None:
    model = MLP(1, 2, 2, width=8)
    model.init_weights(parse_seed(0))
    state = model.state_dict()
    assert list(state) == expected_names(2)
    state["linear.0.weight"].add_(1)  # a copy: the model must not change
    assert not torch.equal(state["linear.0.weight"], model.params[0])

    other = MLP(1, 2, 2, width=8)
    other.load_state_dict(state)
    assert all(torch.equal(state[i.name], p) for i, p in zip(other.infos, other.params))

    missing = dict(state)
    del missing["bn.1.gamma"]
    with pytest.raises(ValueError, match="missing.*bn.1.gamma"):
        other.load_state_dict(missing)
    with pytest.raises(ValueError, match="unexpected.*extra"):
        other.load_state_dict({**state, "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"linear.1.bias has shape \(7,\)"):
        other.load_state_dict({**state, "linear.1.bias": torch.zeros(7)})


@pytest.mark.parametrize("n_hidden", [0, 1])
def test_too_few_hidden_layers(n_hidden) -> None:
    with pytest.raises(ValueError, match="n_hidden must be at least 2"):
        MLP(1, 2, n_hidden)

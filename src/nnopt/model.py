"""TIG's MLP as a flat list of tensors with roles.

Widths ``[d_in, 256 x n_hidden, d_out]``. Each hidden layer is
Linear -> ReLU -> BatchNorm1d (BatchNorm after the activation); the output
layer is a plain Linear. The model is kept functional: its state is one flat
list of tensors in TIG's order (every Linear's weight then bias, then every
BatchNorm's gamma, beta, running mean, running var), which is exactly what
optimizers see.

The last two Linear layers are frozen, and so are gamma and beta of the
BatchNorm after the second-to-last Linear. Running statistics are never
trained but every BatchNorm updates them in training mode.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from nnopt.seeds import Seed

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "HIDDEN_WIDTH",
    "N_FROZEN_LAYERS",
    "Role",
    "TensorInfo",
    "MLP",
    "derive_generator",
]

HIDDEN_WIDTH = 256
N_FROZEN_LAYERS = 2
BN_MOMENTUM = 0.1
BN_EPS = 1e-5

Role = Literal[
    "linear_weight",
    "linear_bias",
    "bn_gamma",
    "bn_beta",
    "bn_running_mean",
    "bn_running_var",
]


@dataclass(frozen=True)
class TensorInfo:
    """What one tensor of the flat parameter list is."""

    index: int  # position in the flat list
    name: str  # e.g. "linear.0.weight", "bn.2.running_var"
    shape: tuple[int, ...]
    role: Role
    layer: int  # which Linear (or which BatchNorm) it belongs to
    trainable: bool  # False: frozen or a running statistic; updates ignored


def derive_generator(seed: bytes, purpose: str) -> torch.Generator:
    """A CPU generator seeded from the instance seed and a purpose label."""
    digest = hashlib.sha256(bytes(seed) + purpose.encode("utf-8")).digest()
    gen = torch.Generator()
    gen.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return gen


class MLP:
    """The challenge's model: a flat tensor list plus a functional forward."""

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        n_hidden: int,
        *,
        device: torch.device | str = "cpu",
        width: int = HIDDEN_WIDTH,
    ) -> None:
        if n_hidden < N_FROZEN_LAYERS:
            raise ValueError(
                f"n_hidden must be at least {N_FROZEN_LAYERS}, got {n_hidden}"
            )
        self.n_hidden = n_hidden
        self.widths = [n_inputs, *([width] * n_hidden), n_outputs]
        self.device = torch.device(device)
        n_linear = n_hidden + 1
        first_frozen_linear = n_linear - N_FROZEN_LAYERS
        # The BatchNorm after the second-to-last Linear is frozen too.
        first_frozen_bn = first_frozen_linear

        infos: list[TensorInfo] = []
        for i in range(n_linear):
            fan_in, fan_out = self.widths[i], self.widths[i + 1]
            trainable = i < first_frozen_linear
            infos.append(
                TensorInfo(
                    len(infos),
                    f"linear.{i}.weight",
                    (fan_out, fan_in),
                    "linear_weight",
                    i,
                    trainable,
                )
            )
            infos.append(
                TensorInfo(
                    len(infos),
                    f"linear.{i}.bias",
                    (fan_out,),
                    "linear_bias",
                    i,
                    trainable,
                )
            )
        bn_roles: tuple[tuple[str, Role], ...] = (
            ("gamma", "bn_gamma"),
            ("beta", "bn_beta"),
            ("running_mean", "bn_running_mean"),
            ("running_var", "bn_running_var"),
        )
        for j in range(n_hidden):
            for suffix, role in bn_roles:
                trainable = j < first_frozen_bn and role in ("bn_gamma", "bn_beta")
                infos.append(
                    TensorInfo(
                        len(infos), f"bn.{j}.{suffix}", (width,), role, j, trainable
                    )
                )
        self.infos: tuple[TensorInfo, ...] = tuple(infos)
        self.params: list[torch.Tensor] = [
            torch.zeros(info.shape, device=self.device) for info in infos
        ]
        self.trainable_indices = tuple(i.index for i in infos if i.trainable)
        self.reset_parameters_to_defaults()

    def reset_parameters_to_defaults(self) -> None:
        """BatchNorm to gamma 1, beta 0, mean 0, var 1; Linear to zero."""
        for info, p in zip(self.infos, self.params):
            p.fill_(1.0 if info.role in ("bn_gamma", "bn_running_var") else 0.0)

    def init_weights(self, seed: Seed | bytes) -> None:
        """Weights Uniform(-c, c), c = 0.5 sqrt(2/(fan_in+fan_out)); biases 0.

        TIG draws these from a generator seeded by a device pointer, so its
        exact init cannot be reproduced; this draws the same distribution
        from a generator derived from the instance seed.
        """
        self.reset_parameters_to_defaults()
        gen = derive_generator(seed, "init")
        for info, p in zip(self.infos, self.params):
            if info.role == "linear_weight":
                fan_out, fan_in = info.shape
                c = 0.5 * math.sqrt(2.0 / (fan_in + fan_out))
                w = torch.empty(info.shape).uniform_(-c, c, generator=gen)
                p.copy_(w)

    def linear_params(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.params[2 * i], self.params[2 * i + 1]

    def bn_params(self, j: int) -> list[torch.Tensor]:
        base = 2 * (self.n_hidden + 1) + 4 * j
        return self.params[base : base + 4]

    def forward(
        self,
        x: torch.Tensor,
        *,
        training: bool,
        params: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The output for ``x``; in training mode running statistics update."""
        p = self.params if params is None else params
        n_linear = self.n_hidden + 1
        bn_base = 2 * n_linear
        h = x
        for i in range(self.n_hidden):
            h = F.linear(h, p[2 * i], p[2 * i + 1]).relu_()
            gamma, beta, mean, var = p[bn_base + 4 * i : bn_base + 4 * i + 4]
            h = F.batch_norm(h, mean, var, gamma, beta, training, BN_MOMENTUM, BN_EPS)
        last = 2 * self.n_hidden
        return F.linear(h, p[last], p[last + 1])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Named copies of every tensor, for saving."""
        return {i.name: p.detach().clone() for i, p in zip(self.infos, self.params)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load named tensors, checking names and shapes."""
        missing = [i.name for i in self.infos if i.name not in tensors]
        extra = sorted(set(tensors) - {i.name for i in self.infos})
        if missing or extra:
            raise ValueError(
                f"model tensors do not match: missing {missing or 'none'}, "
                f"unexpected {extra or 'none'}"
            )
        for info, p in zip(self.infos, self.params):
            t = tensors[info.name]
            if tuple(t.shape) != info.shape:
                raise ValueError(
                    f"tensor {info.name} has shape {tuple(t.shape)}, "
                    f"expected {info.shape}"
                )
            p.copy_(t.to(device=p.device, dtype=p.dtype))

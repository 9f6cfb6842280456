"""Strong alternative optimizers, registered as optional extras.

Each entry imports its package only when built, so ``nnopt optimizers``
works without them; a missing package raises ``ImportError``, which the
registry turns into "install it with pip install 'nnopt[extras]'".

| name | what | package |
|---|---|---|
| ``schedulefree`` | schedule-free AdamW (gradient at y, x held) | schedulefree |
| ``lion`` | Lion (sign of interpolated momentum) | lion-pytorch |
| ``muon`` | Muon on hidden matrices, AdamW on the rest | torch >= 2.9 only |
| ``adan`` | Adan (Nesterov momentum of gradient differences) | adan-pytorch |
| ``prodigy`` | Prodigy (learning-rate-free Adam) | prodigyopt |

Learning rates follow each package's convention; the harness's gradient is
that of the summed squared error, to which Adam-type and sign methods are
invariant (Prodigy's distance estimate adapts to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nnopt.api import OptimizerSetup, StepContext
from nnopt.model import TensorInfo
from nnopt.optimizers.registry import register
from nnopt.optimizers.torch_adapter import TorchOptimizer

__all__ = ["MuonAdamW", "ScheduleFreeAdamW"]

EXTRAS = "nnopt[extras]"


def _betas(kw: dict[str, Any], defaults: tuple[float, ...]) -> dict[str, Any]:
    """Accept beta1=/beta2=/beta3= on the command line in place of betas=(..)."""
    keys = [f"beta{i + 1}" for i in range(len(defaults))]
    if any(k in kw for k in keys):
        kw["betas"] = tuple(kw.pop(k, d) for k, d in zip(keys, defaults))
    elif isinstance(kw.get("betas"), list):
        kw["betas"] = tuple(kw["betas"])
    return kw


def _lion(lr: float = 1e-4, weight_decay: float = 0.0, **kw: Any) -> TorchOptimizer:
    from lion_pytorch import Lion

    return TorchOptimizer(
        Lion, lr=lr, weight_decay=weight_decay, **_betas(kw, (0.9, 0.99))
    )


def _adan(lr: float = 1e-3, weight_decay: float = 0.0, **kw: Any) -> TorchOptimizer:
    from adan_pytorch import Adan

    return TorchOptimizer(
        Adan, lr=lr, weight_decay=weight_decay, **_betas(kw, (0.02, 0.08, 0.01))
    )


def _prodigy(lr: float = 1.0, weight_decay: float = 0.0, **kw: Any) -> TorchOptimizer:
    from prodigyopt import Prodigy

    return TorchOptimizer(
        Prodigy, lr=lr, weight_decay=weight_decay, **_betas(kw, (0.9, 0.999))
    )


# --- Muon on hidden matrices, AdamW on everything else ---------------------


def _is_hidden_matrix(p: torch.Tensor) -> bool:
    return p.ndim == 2 and min(p.shape) > 1


class MuonAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` for groups marked ``muon``, AdamW for the others.

    torch's Muon accepts only 2-D tensors, so the two run as separate
    optimizers over one set of groups. Groups without a ``muon`` flag (a plain
    tensor list) are split by shape: 2-D tensors with both sides above 1 go
    to Muon.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        muon_lr: float | None = None,
        momentum: float = 0.95,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
    ) -> None:
        if not hasattr(torch.optim, "Muon"):
            raise ImportError("torch.optim.Muon needs torch >= 2.9")
        super().__init__(params, {"lr": lr})
        muon, other = [], []
        for group in self.param_groups:
            for p in group["params"]:
                flag = group.get("muon")
                use_muon = _is_hidden_matrix(p) if flag is None else flag
                (muon if use_muon else other).append(p)
        self.inner: list[torch.optim.Optimizer] = []
        if muon:
            self.inner.append(
                torch.optim.Muon(
                    muon,
                    lr=lr if muon_lr is None else muon_lr,
                    momentum=momentum,
                    weight_decay=weight_decay,
                    adjust_lr_fn="match_rms_adamw",
                )
            )
        if other:
            self.inner.append(
                torch.optim.AdamW(other, lr=lr, betas=betas, weight_decay=weight_decay)
            )

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for opt in self.inner:
            opt.step()


def _muon_groups(
    infos: list[TensorInfo], shadow: list[torch.Tensor]
) -> list[dict[str, Any]]:
    """Hidden Linear weights (not the 256 x 1 first layer) to Muon."""
    hidden = [
        p
        for t, p in zip(infos, shadow)
        if t.role == "linear_weight" and _is_hidden_matrix(p)
    ]
    ids = {id(p) for p in hidden}
    rest = [p for p in shadow if id(p) not in ids]
    return [{"params": hidden, "muon": True}, {"params": rest, "muon": False}]


def _muon(lr: float = 1e-3, **kw: Any) -> TorchOptimizer:
    if not hasattr(torch.optim, "Muon"):
        raise ImportError("torch.optim.Muon needs torch >= 2.9")
    return TorchOptimizer(
        MuonAdamW, param_groups=_muon_groups, lr=lr, **_betas(kw, (0.9, 0.999))
    )


# --- Schedule-free AdamW: gradient at y (a proposal), harness holds x ------


@dataclass
class _ScheduleFreeState:
    optimizer: Any  # schedulefree.AdamWScheduleFree over the shadow tensors
    indices: list[int]  # flat-list index of each shadow tensor
    shadow: list[torch.Tensor]  # y in train mode, x in eval mode
    x: list[torch.Tensor]  # the evaluated sequence, as last handed out
    bn_batches: int
    steps_per_epoch: int


class ScheduleFreeAdamW:
    """Schedule-free AdamW (Defazio et al., 2024) mapped onto the hooks.

    The method keeps three sequences: z (the SGD-like iterate), x (the
    average, which is evaluated) and y = (1 - beta1) z + beta1 x (where the
    gradient is taken). The harness's parameters hold x; ``query_at_params``
    proposes y, so the forward and backward run at y; ``step`` advances the
    package's optimizer and returns ``x_new - x`` as the update.

    The harness restores BatchNorm running statistics after a proposal, so
    with a proposal on every batch they would never track x. The last
    ``bn_batches`` batches of each epoch therefore train at x itself (no
    proposal), refreshing the running statistics; their gradient is taken at
    x rather than y, a small approximation since y is close to x.
    """

    def __init__(
        self,
        lr: float = 2.5e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        bn_batches: int = 2,
    ) -> None:
        import schedulefree  # noqa: F401  (fail now if missing)

        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not (isinstance(bn_batches, int) and bn_batches >= 0):
            raise ValueError(f"bn_batches must be an integer >= 0, got {bn_batches!r}")
        self.hparams = dict(
            lr=lr,
            betas=(beta1, beta2),
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
        )
        self.bn_batches = bn_batches

    def init_state(self, setup: OptimizerSetup) -> _ScheduleFreeState:
        import schedulefree

        infos = [t for t in setup.tensors if t.trainable]
        shadow = [torch.zeros(t.shape, device=setup.device) for t in infos]
        return _ScheduleFreeState(
            optimizer=schedulefree.AdamWScheduleFree(shadow, **self.hparams),
            indices=[t.index for t in infos],
            shadow=shadow,
            x=[],
            bn_batches=self.bn_batches,
            steps_per_epoch=setup.steps_per_epoch,
        )

    def _start(self, state: _ScheduleFreeState, params: Sequence[torch.Tensor]) -> None:
        """At the first call, x = y = z = the harness's initial parameters."""
        if state.x:
            return
        with torch.no_grad():
            for s, i in zip(state.shadow, state.indices):
                s.copy_(params[i])
        state.x = [params[i].clone() for i in state.indices]
        state.optimizer.train()

    def query_at_params(
        self,
        state: _ScheduleFreeState,
        params: Sequence[torch.Tensor],
        ctx: StepContext,
    ) -> list[torch.Tensor] | None:
        self._start(state, params)
        if ctx.batch >= state.steps_per_epoch - state.bn_batches:
            return None
        proposal = [p.clone() for p in params]
        for s, i in zip(state.shadow, state.indices):
            proposal[i] = s.detach().clone()
        return proposal

    def step(
        self,
        state: _ScheduleFreeState,
        params: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor],
        ctx: StepContext,
    ) -> list[torch.Tensor | None]:
        self._start(state, params)
        for s, i in zip(state.shadow, state.indices):
            s.grad = grads[i]
        state.optimizer.step()
        state.optimizer.eval()  # shadow now holds x
        updates: list[torch.Tensor | None] = [None] * len(params)
        with torch.no_grad():
            for k, (s, i) in enumerate(zip(state.shadow, state.indices)):
                updates[i] = s - params[i]
                state.x[k] = s.detach().clone()
        state.optimizer.train()  # back to y
        return updates


register(
    "schedulefree",
    ScheduleFreeAdamW,
    "schedule-free AdamW: gradient at y via proposals, harness holds x",
    requires=EXTRAS,
)
register("lion", _lion, "Lion (lion-pytorch), lr 1e-4", requires=EXTRAS)
register(
    "muon",
    _muon,
    "torch.optim.Muon on hidden matrices, AdamW on the rest, lr 1e-3",
    requires=EXTRAS,
)
register("adan", _adan, "Adan (adan-pytorch), lr 1e-3", requires=EXTRAS)
register(
    "prodigy", _prodigy, "Prodigy (prodigyopt), learning-rate free", requires=EXTRAS
)

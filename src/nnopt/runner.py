"""One challenge run, end to end: instance, training, test score.

:class:`RunConfig` says everything needed to reproduce a run;
:func:`run_challenge` executes it and, given a folder, writes the run's
artifacts there (see :mod:`nnopt.artifacts`).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nnopt.data import Instance, Profile, generate_instance, get_profile
from nnopt.loop import (
    EpochCallback,
    EpochRecord,
    LoopSettings,
    TrainResult,
    evaluate_loss,
    train,
)
from nnopt.model import MLP
from nnopt.optimizers.registry import OptimizerSpec, load_optimizer, parse_spec
from nnopt.scoring import Difficulty, Score, score
from nnopt.seeds import parse_seed

__all__ = ["RunConfig", "RunResult", "run_challenge", "score_solution"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run."""

    seed: str = "0"  # 64 hex digits, or any text (hashed); see nnopt.seeds
    n_hidden: int = 4  # the track
    accuracy_factor: int = 0
    optimizer: OptimizerSpec = field(default_factory=lambda: parse_spec("adam"))
    profile: Profile = field(default_factory=lambda: get_profile("tig"))
    device: str = "cpu"
    loop: LoopSettings = field(default_factory=LoopSettings)

    def __post_init__(self) -> None:
        parse_seed(self.seed)
        Difficulty(self.n_hidden, self.accuracy_factor)

    @property
    def difficulty(self) -> Difficulty:
        return Difficulty(self.n_hidden, self.accuracy_factor)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "seed_hex": parse_seed(self.seed).hex(),
            "n_hidden": self.n_hidden,
            "accuracy_factor": self.accuracy_factor,
            "optimizer": self.optimizer.to_dict(),
            "profile": self.profile.to_dict(),
            "device": self.device,
            "loop": asdict(self.loop),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        try:
            return cls(
                seed=str(data["seed"]),
                n_hidden=int(data["n_hidden"]),
                accuracy_factor=data["accuracy_factor"],
                optimizer=OptimizerSpec(
                    data["optimizer"]["ref"], dict(data["optimizer"]["hparams"])
                ),
                profile=Profile.from_dict(data["profile"]),
                device=str(data.get("device", "cpu")),
                loop=LoopSettings(**data.get("loop", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"run config is incomplete or malformed: {exc}") from exc


@dataclass
class RunResult:
    """A finished run: its config, training summary and test score."""

    config: RunConfig
    training: TrainResult
    score: Score
    run_dir: Path | None = None

    def summary(self) -> dict[str, Any]:
        """The flat record ``nnopt run --json`` prints (non-finite floats: None)."""
        c, t, s = self.config, self.training, self.score
        record = {
            "seed": c.seed,
            "profile": c.profile.name,
            "n_hidden": c.n_hidden,
            "accuracy_factor": c.accuracy_factor,
            "optimizer": c.optimizer.label,
            "device": c.device,
            "test_loss": s.test_loss,
            "threshold": s.threshold,
            "passed": s.passed,
            "quality": s.quality,
            "best_val_loss": t.best_val_loss,
            "epochs_used": t.epochs_used,
            "epochs_run": t.epochs_run,
            "diverged": t.diverged,
            "stop_reason": t.stop_reason,
            "wall_time_s": t.wall_time_s,
            "run_dir": str(self.run_dir) if self.run_dir else None,
        }
        return {k: _finite_or_none(v) for k, v in record.items()}


def _finite_or_none(value: Any) -> Any:
    """Strict JSON has no NaN or Infinity: report those as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def score_solution(
    instance: Instance,
    n_hidden: int,
    solution: dict[str, torch.Tensor],
    difficulty: Difficulty,
    *,
    device: str | torch.device = "cpu",
) -> Score:
    """Load ``solution`` into a fresh model and score it on the test split."""
    p = instance.profile
    model = MLP(p.n_inputs, p.n_outputs, n_hidden, device=device)
    model.load_state_dict(solution)
    x, _, y = instance.split("test")
    test_loss = evaluate_loss(
        model,
        torch.as_tensor(x, device=model.device),
        torch.as_tensor(y, device=model.device),
    )
    return score(instance, test_loss, difficulty)


def _record_epoch(
    out_dir: Path, on_epoch: EpochCallback | None, record: EpochRecord
) -> None:
    from nnopt import artifacts

    artifacts.append_metrics(out_dir, record)
    if on_epoch is not None:
        on_epoch(record)


def run_challenge(
    config: RunConfig,
    *,
    out_dir: Path | None = None,
    on_epoch: EpochCallback | None = None,
) -> RunResult:
    """Generate the instance, train, score, and write artifacts if asked."""
    from nnopt import artifacts  # artifacts imports this module

    optimizer = load_optimizer(config.optimizer)
    instance = generate_instance(config.seed, config.profile)
    callback = on_epoch
    if out_dir is not None:
        artifacts.start_run_dir(out_dir, config)
        callback = functools.partial(_record_epoch, out_dir, on_epoch)

    training = train(
        instance,
        config.n_hidden,
        optimizer,
        device=config.device,
        settings=config.loop,
        on_epoch=callback,
    )
    result_score = score_solution(
        instance,
        config.n_hidden,
        training.solution,
        config.difficulty,
        device=config.device,
    )
    if not math.isfinite(result_score.test_loss):
        log.warning("test loss is not finite for seed %s", config.seed)
    result = RunResult(config, training, result_score, out_dir)
    if out_dir is not None:
        artifacts.finish_run_dir(out_dir, result)
    return result

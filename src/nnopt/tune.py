"""Hyperparameter tuning with Optuna: search, pruning, held-out evaluation.

A study searches an optimizer's hyperparameters within a
:class:`SearchSpace`. A trial trains every track on every *tuning* seed and
scores the mean quality of those runs. The best hyperparameters are then
judged on *held-out* seeds that no trial saw, next to the optimizer's
defaults, as a bench (:mod:`nnopt.bench`), so ``nnopt report`` can read it.

Pruning. Every trial trains the same runs in the same order, so run ``i`` at
epoch ``e`` means the same instance at the same point of training in every
trial; that position is the step Optuna sees, ``i * max_epochs + e``. The
value reported there is the objective as far as it is known: the mean over
runs ``0..i`` of the *validation quality*, TIG's quality formula applied to
the best validation loss against the validation split's own noise, the run
in progress counting with its best loss so far. A median pruner thus
compares trials on equal terms, and a trial it stops ends with
:class:`optuna.TrialPruned` raised from the epoch callback.

Storage. Any Optuna storage URL works (SQLite for one machine, PostgreSQL for
several); processes given the same URL and study name share one study. The
study records what defines its objective (optimizer, space, tracks, tuning
seeds, data, loop) and refuses to run with anything else.

The space file is JSON, one entry per hyperparameter::

    {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": true},
     "beta1": {"type": "float", "low": 0.8, "high": 0.99},
     "warmup": {"type": "int", "low": 0, "high": 100, "step": 10},
     "nesterov": {"type": "categorical", "choices": [true, false]}}
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import socket
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from nnopt.api import HookError
from nnopt.artifacts import write_json
from nnopt.bench.config import BenchConfig
from nnopt.bench.jobs import Backend, ResultCallback
from nnopt.bench.run import plan_bench, run_bench
from nnopt.bench.stats import head_to_head, summarize
from nnopt.bench.store import BenchDir
from nnopt.data import Profile, generate_instance, get_profile
from nnopt.loop import EpochRecord, LoopSettings
from nnopt.optimizers.registry import OptimizerSpec, load_optimizer, parse_spec
from nnopt.runner import RunConfig, run_challenge
from nnopt.scoring import QUALITY_ALPHA, QUALITY_CLAMP, Difficulty
from nnopt.seeds import derive_seeds, parse_seed

__all__ = [
    "COUNTED_STATES",
    "ParamSpec",
    "SearchSpace",
    "SpaceError",
    "StudyMismatchError",
    "TuneSettings",
    "check_disjoint_seeds",
    "best_spec",
    "count_trials",
    "evaluate",
    "evaluation_summary",
    "make_storage",
    "open_study",
    "run_trials",
    "save_plots",
    "sqlite_url",
    "write_best",
    "write_trials",
]

log = logging.getLogger(__name__)

# Trials that count toward --trials. A failed trial (a bad hyperparameter
# value, a killed process) does not, so a resumed study runs it again.
COUNTED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
SETTINGS_ATTR = "nnopt_settings"  # study user attribute: what defines it
HEARTBEAT_S = 30  # a trial whose process stops beating for ...
GRACE_S = 120  # ... this long is marked failed by the next process
_PARAM_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


class SpaceError(ValueError):
    """A search space that cannot be used; the message says where and why."""


class StudyMismatchError(ValueError):
    """A stored study was created for a different tuning problem."""


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter's range, as Optuna samples it."""

    name: str
    kind: str  # "float", "int" or "categorical"
    low: float = 0.0  # float and int: inclusive bounds
    high: float = 0.0
    log: bool = False  # sample uniformly in log space
    step: float | None = None  # float and int: grid spacing from low
    choices: tuple[Any, ...] = ()  # categorical: JSON scalars

    @classmethod
    def from_dict(cls, name: str, data: Any, *, where: str = "space") -> ParamSpec:
        """Read and check one entry of a space file."""
        at = f"{where}: parameter {name!r}"
        if not name.isidentifier():
            raise SpaceError(
                f"{at}: a name must be a Python identifier, since it is passed "
                "to the optimizer as a keyword argument"
            )
        if not isinstance(data, dict):
            raise SpaceError(
                f'{at}: expected an object such as {{"type": "float", "low": 1e-4, '
                f'"high": 1e-2, "log": true}}, got {data!r}'
            )
        kind = data.get("type")
        if kind not in _PARAM_KEYS:
            raise SpaceError(
                f'{at}: "type" must be one of {", ".join(_PARAM_KEYS)}, got {kind!r}'
            )
        unknown = sorted(set(data) - _PARAM_KEYS[kind])
        if unknown:
            raise SpaceError(
                f"{at}: unknown key(s) {', '.join(unknown)} for type {kind}; "
                f"allowed: {', '.join(sorted(_PARAM_KEYS[kind]))}"
            )
        if kind == "categorical":
            return cls(name, kind, choices=_check_choices(at, data.get("choices")))
        return cls._numeric(at, name, kind, data)

    @classmethod
    def _numeric(cls, at: str, name: str, kind: str, data: dict) -> ParamSpec:
        for key in ("low", "high"):
            if key not in data:
                raise SpaceError(f'{at}: type {kind} needs "low" and "high"')
            value = data[key]
            if not _is_number(value) or (
                kind == "int" and not float(value).is_integer()
            ):
                what = "integer" if kind == "int" else "number"
                raise SpaceError(f"{at}: {key} must be a finite {what}, got {value!r}")
        low, high = data["low"], data["high"]
        if not low < high:
            raise SpaceError(f"{at}: low ({low}) must be below high ({high})")
        log_scale = data.get("log", False)
        if not isinstance(log_scale, bool):
            raise SpaceError(f"{at}: log must be true or false, got {log_scale!r}")
        if log_scale and low <= 0:
            raise SpaceError(f"{at}: a log scale needs low > 0, got {low}")
        step = data.get("step")
        if step is not None:
            if not _is_number(step) or step <= 0:
                raise SpaceError(f"{at}: step must be a positive number, got {step!r}")
            if kind == "int" and not float(step).is_integer():
                raise SpaceError(f"{at}: step of an int must be an integer, got {step}")
            if log_scale:
                raise SpaceError(f"{at}: step and log cannot be combined")
        return cls(name, kind, low, high, log_scale, step)

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask ``trial`` for a value of this hyperparameter."""
        if self.kind == "float":
            return trial.suggest_float(
                self.name, self.low, self.high, log=self.log, step=self.step
            )
        if self.kind == "int":
            return trial.suggest_int(
                self.name,
                int(self.low),
                int(self.high),
                log=self.log,
                step=int(self.step or 1),
            )
        return trial.suggest_categorical(self.name, list(self.choices))

    def middle(self) -> Any:
        """A value inside the range (its geometric or arithmetic middle)."""
        if self.kind == "categorical":
            return self.choices[0]
        mid = (
            math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        )
        return int(round(mid)) if self.kind == "int" else mid

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"type": self.kind, "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def _check_choices(at: str, choices: Any) -> tuple[Any, ...]:
    if not isinstance(choices, list) or not choices:
        raise SpaceError(f'{at}: type categorical needs a non-empty list "choices"')
    for choice in choices:
        if choice is not None and not isinstance(choice, (bool, int, float, str)):
            raise SpaceError(
                f"{at}: choice {choice!r} is not a number, string, boolean or "
                "null; tune a tuple's parts separately (beta1, beta2 for betas)"
            )
    seen = [json.dumps(c) for c in choices]
    if len(set(seen)) != len(seen):
        raise SpaceError(f"{at}: choices repeat a value: {choices}")
    return tuple(choices)


@dataclass(frozen=True)
class SearchSpace:
    """The hyperparameters a study searches, in file order."""

    params: tuple[ParamSpec, ...]

    def __post_init__(self) -> None:
        if not self.params:
            raise SpaceError("the search space is empty; give at least one parameter")

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "space") -> SearchSpace:
        if not isinstance(data, dict) or not data:
            raise SpaceError(
                f"{where}: expected a non-empty JSON object mapping hyperparameter "
                f'names to ranges, e.g. {{"lr": {{"type": "float", "low": 1e-4, '
                f'"high": 1e-2, "log": true}}}}'
            )
        return cls(
            tuple(ParamSpec.from_dict(k, v, where=where) for k, v in data.items())
        )

    @classmethod
    def from_file(cls, path: Path) -> SearchSpace:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise SpaceError(f"cannot read space file {path}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise SpaceError(f"space file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data, where=f"space file {path}")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {p.name: p.suggest(trial) for p in self.params}

    def middle(self) -> dict[str, Any]:
        return {p.name: p.middle() for p in self.params}

    def to_dict(self) -> dict[str, Any]:
        return {p.name: p.to_dict() for p in self.params}


def check_disjoint_seeds(tune_seeds: Sequence[str], eval_seeds: Sequence[str]) -> None:
    """Raise unless no held-out seed names the same instance as a tuning seed."""
    tuned = {bytes(parse_seed(s)): s for s in tune_seeds}
    shared = [s for s in eval_seeds if bytes(parse_seed(s)) in tuned]
    if shared:
        listed = ", ".join(shared[:5]) + (" ..." if len(shared) > 5 else "")
        raise ValueError(
            f"{len(shared)} held-out seed(s) are also tuning seeds ({listed}); "
            "held-out seeds must never be tuned on: derive them from another base"
        )


@dataclass(frozen=True)
class TuneSettings:
    """What a study tunes, on which runs, and where it is judged afterwards."""

    optimizer: OptimizerSpec  # its hyperparameters stay fixed
    space: SearchSpace
    tracks: tuple[int, ...] = (4,)  # n_hidden values
    tune_seeds: tuple[str, ...] = tuple(derive_seeds("tune", 8))
    eval_seeds: tuple[str, ...] = tuple(derive_seeds("eval", 8))  # held out
    profile: Profile = field(default_factory=lambda: get_profile("tig"))
    device: str = "cpu"  # not part of the study's identity
    loop: LoopSettings = field(default_factory=LoopSettings)
    report_every: int = 20  # epochs between reports to the pruner

    def __post_init__(self) -> None:
        if not self.tracks:
            raise ValueError("tuning needs at least one track (n_hidden)")
        for track in self.tracks:
            Difficulty(track)
        for what, seeds in (("tuning", self.tune_seeds), ("held-out", self.eval_seeds)):
            if not seeds:
                raise ValueError(f"tuning needs at least one {what} seed")
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"the {what} seeds repeat a seed")
        check_disjoint_seeds(self.tune_seeds, self.eval_seeds)
        both = sorted(set(self.optimizer.hparams) & set(self.space.names))
        if both:
            raise ValueError(
                f"{', '.join(both)} is fixed in the optimizer spec and also in the "
                "search space; keep it in one of them"
            )
        if self.report_every < 1:
            raise ValueError(f"report_every must be >= 1, got {self.report_every}")

    def runs(self) -> list[tuple[int, str]]:
        """A trial's runs, seed-major: the first ones already cover every track."""
        return [(track, seed) for seed in self.tune_seeds for track in self.tracks]

    def identity(self) -> dict[str, Any]:
        """What defines the objective; a shared study must agree on all of it."""
        return json.loads(
            json.dumps(
                {
                    "optimizer": self.optimizer.to_dict(),
                    "space": self.space.to_dict(),
                    "tracks": list(self.tracks),
                    "tune_seeds": list(self.tune_seeds),
                    "profile": self.profile.to_dict(),
                    "loop": asdict(self.loop),
                }
            )
        )

    def default_name(self) -> str:
        """A study name that the same tuning always gets, so reruns resume."""
        text = json.dumps(self.identity(), sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        ref = re.sub(r"[^A-Za-z0-9.]+", "-", self.optimizer.ref).strip("-")[:40]
        tracks = ".".join(str(t) for t in self.tracks)
        return f"{ref}-h{tracks}-s{len(self.tune_seeds)}-{digest}"

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "eval_seeds": list(self.eval_seeds),
            "device": self.device,
            "report_every": self.report_every,
        }

    def check_optimizer(self) -> None:
        """Build the optimizer at the middle of the space, so a misspelt name
        fails now rather than in every trial."""
        values = self.space.middle()
        try:
            load_optimizer(parse_spec(self.optimizer, **values))
        except (ValueError, HookError) as exc:
            raise SpaceError(
                f"optimizer {self.optimizer.ref!r} does not accept the space's "
                f"hyperparameters (tried {values}): {exc}"
            ) from None


def sqlite_url(path: Path) -> str:
    """The storage URL of an SQLite file."""
    return f"sqlite:///{Path(path).resolve()}"


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage with heartbeats, so a killed process's trial is
    marked failed (and run again) instead of staying "running" forever."""
    engine_kwargs = (
        {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    )
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                )
        except Exception as exc:  # two processes creating the tables at once
            if attempt == 4 or "already exists" not in str(exc).lower():
                raise
            log.info("storage busy (%s); retrying", exc)
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def open_study(
    settings: TuneSettings,
    *,
    storage: str | optuna.storages.BaseStorage,
    study_name: str,
    sampler_seed: int | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study, or join it if it exists with the same settings.

    The default pruner is a median pruner that waits for 5 finished trials
    and, in each trial, for the first 20 epochs.
    """
    if isinstance(storage, str):
        storage = make_storage(storage)
    if pruner is None:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=20)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed, constant_liar=True),
        pruner=pruner,
        load_if_exists=True,
    )
    wanted = settings.identity()
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, wanted)
    elif stored != wanted:
        differ = sorted(
            k for k in wanted.keys() | stored.keys() if wanted.get(k) != stored.get(k)
        )
        raise StudyMismatchError(
            f"study {study_name!r} was created with other settings "
            f"({', '.join(differ)} differ); give this tuning another study name "
            "or storage"
        )
    return study


def count_trials(study: optuna.Study) -> int:
    """Trials that count toward the study's target (finished or pruned)."""
    return len(study.get_trials(deepcopy=False, states=COUNTED_STATES))


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


RunCallback = Callable[[int, int, int], None]  # trial number, runs done, runs


class _Objective:
    """Mean quality over the tuning runs, reporting as it goes."""

    def __init__(self, settings: TuneSettings, on_run: RunCallback | None) -> None:
        self.settings = settings
        self.on_run = on_run
        self._val_thresholds: dict[str, float] = {}

    def val_quality(self, seed: str, val_loss: float) -> float:
        """TIG's quality formula on the validation split."""
        eps2 = self._val_thresholds.get(seed)
        if eps2 is None:
            _, f, y = generate_instance(seed, self.settings.profile).split("val")
            diff = y.astype(np.float64) - f.astype(np.float64)
            eps2 = QUALITY_ALPHA / self.settings.profile.n_val * float(np.sum(diff**2))
            self._val_thresholds[seed] = eps2
        if not math.isfinite(val_loss):
            return -QUALITY_CLAMP
        return max(-QUALITY_CLAMP, min(QUALITY_CLAMP, (eps2 - val_loss) / eps2))

    def __call__(self, trial: optuna.Trial) -> float:
        s = self.settings
        spec = parse_spec(s.optimizer, **s.space.suggest(trial))
        trial.set_user_attr("worker", _worker_id())
        runs = s.runs()
        finished: list[float] = []  # validation quality of each finished run
        qualities: list[float] = []
        for index, (track, seed) in enumerate(runs):
            config = RunConfig(
                seed=seed,
                n_hidden=track,
                optimizer=spec,
                profile=s.profile,
                device=s.device,
                loop=s.loop,
            )

            def report(
                record: EpochRecord, index: int = index, seed: str = seed
            ) -> None:
                self._report(trial, index, seed, finished, record)

            result = run_challenge(config, on_epoch=report)
            qualities.append(result.score.quality)
            finished.append(self.val_quality(seed, result.training.best_val_loss))
            if self.on_run is not None:
                self.on_run(trial.number, index + 1, len(runs))
        trial.set_user_attr("qualities", qualities)
        return statistics.fmean(qualities)

    def _report(
        self,
        trial: optuna.Trial,
        index: int,
        seed: str,
        finished: list[float],
        record: EpochRecord,
    ) -> None:
        max_epochs = self.settings.loop.max_epochs
        last = (
            record.epoch + 1 == max_epochs
            or record.patience_left <= 0
            or not (math.isfinite(record.train_loss) and math.isfinite(record.val_loss))
        )
        if (record.epoch + 1) % self.settings.report_every and not last:
            return
        current = self.val_quality(seed, record.best_val_loss)
        value = (sum(finished) + current) / (len(finished) + 1)
        trial.report(value, index * max_epochs + record.epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"run {index + 1} of {len(self.settings.runs())}, epoch "
                f"{record.epoch + 1}: mean validation quality {value:.4f}"
            )


def run_trials(
    study: optuna.Study,
    settings: TuneSettings,
    *,
    n_trials: int,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    on_run: RunCallback | None = None,
) -> int:
    """Run trials until the study holds ``n_trials`` counted ones; return how
    many this call ran.

    Several processes may do this on one study at once: each stops when the
    shared count is reached, so the total overshoots by at most the trials
    still running elsewhere at that moment.
    """
    remaining = n_trials - count_trials(study)
    if remaining <= 0:
        return 0
    settings.check_optimizer()
    callbacks: list[Any] = [optuna.study.MaxTrialsCallback(n_trials, COUNTED_STATES)]
    if on_trial is not None:
        callbacks.append(on_trial)
    before = len(study.get_trials(deepcopy=False))
    study.optimize(
        _Objective(settings, on_run),
        n_trials=remaining,
        callbacks=callbacks,
        catch=(ValueError, HookError),  # a bad value fails its trial only
    )
    mine = [
        t
        for t in study.get_trials(deepcopy=False)[before:]
        if t.user_attrs.get("worker") == _worker_id()
    ]
    return len(mine)


def best_spec(study: optuna.Study, settings: TuneSettings) -> OptimizerSpec:
    """The fixed hyperparameters plus the best trial's, continuous ones
    rounded to 4 significant digits: digits beyond are noise, and they would
    make every label and report column unreadable."""
    params = dict(study.best_trial.params)
    for p in settings.space.params:
        if p.kind == "float" and p.step is None:
            params[p.name] = float(f"{params[p.name]:.4g}")
    return parse_spec(settings.optimizer, **params)


def evaluate(
    settings: TuneSettings,
    tuned: OptimizerSpec,
    bench_path: Path,
    backend: Backend,
    *,
    on_result: ResultCallback | None = None,
) -> list[dict[str, Any]]:
    """Run ``tuned`` and the optimizer's defaults on the held-out seeds.

    The runs form a bench in ``bench_path`` (``nnopt report`` reads it; a
    rerun resumes it). Returns one row per job, the latest attempt.
    """
    config = BenchConfig(
        optimizers=(settings.optimizer, tuned),
        tracks=settings.tracks,
        seeds=settings.eval_seeds,
        profile=settings.profile,
        loop=settings.loop,
        device=settings.device,
        bound=False,
        baseline=settings.optimizer.label,
    )
    bench_dir = BenchDir(bench_path)
    with bench_dir.lock():
        plan = plan_bench(config, bench_dir)
        run_bench(plan, bench_dir, backend, on_result=on_result)
        rows = bench_dir.results()
    return [rows[job.key] for job in plan.jobs if job.key in rows]


def _finite_or_none(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


def evaluation_summary(
    rows: Sequence[dict[str, Any]], settings: TuneSettings, tuned: OptimizerSpec
) -> dict[str, Any]:
    """Per track: each optimizer's mean quality with its 95% interval, and the
    tuned one against the defaults, paired by seed (NaN written as null)."""
    per_track = [
        {k: _finite_or_none(v) for k, v in g.to_dict().items()}
        for g in summarize(rows, accuracy_factors=(0,))
    ]
    paired = [
        {k: _finite_or_none(v) for k, v in c.to_dict().items()}
        for c in head_to_head(rows, baseline=settings.optimizer.label)
        if c.optimizer == tuned.label
    ]
    return {
        "seeds": list(settings.eval_seeds),
        "per_track": per_track,
        "tuned_vs_default": paired,
    }


def write_best(
    path: Path,
    study: optuna.Study,
    settings: TuneSettings,
    evaluation: dict[str, Any] | None,
) -> OptimizerSpec:
    """Write ``best.json``: an optimizer spec file (``nnopt run --optimizer
    @best.json``) that also says where it came from and how it held up."""
    best = best_spec(study, settings)
    trial = study.best_trial
    write_json(
        Path(path),
        {
            **best.to_dict(),
            "label": best.label,
            "tuning": {
                "study": study.study_name,
                "trial": trial.number,
                "mean_quality": trial.value,
                "tracks": list(settings.tracks),
                "seeds": list(settings.tune_seeds),
                "trials_counted": count_trials(study),
            },
            "evaluation": evaluation,
        },
    )
    return best


def write_trials(study: optuna.Study, path: Path) -> None:
    """Every trial of the study as one JSON line."""
    lines = []
    for t in study.get_trials(deepcopy=False):
        lines.append(
            json.dumps(
                {
                    "number": t.number,
                    "state": t.state.name,
                    "value": t.value,
                    "params": t.params,
                    "worker": t.user_attrs.get("worker"),
                    "qualities": t.user_attrs.get("qualities"),
                    "last_step": t.last_step,
                    "duration_s": t.duration.total_seconds() if t.duration else None,
                }
            )
        )
    Path(path).write_text("\n".join(lines) + "\n")


_MAX_LEGEND = 12  # trials beyond which a per-trial legend is dropped


def save_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optimisation history, parameter importance and intermediate values as
    PNG files; a plot the study cannot support yet is skipped with a warning."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as oplt

    plots = {
        "history.png": oplt.plot_optimization_history,
        "importance.png": oplt.plot_param_importances,
        "intermediate.png": oplt.plot_intermediate_values,
    }
    written = []
    for name, plot in plots.items():
        path = Path(out_dir) / name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = plot(study)
            first = np.ravel(axes)[0]
            legend = first.get_legend()
            if legend is not None and len(study.trials) > _MAX_LEGEND:
                legend.remove()  # one entry per trial: a wall of text
            figure = first.figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            figure.savefig(path, dpi=120)
            plt.close(figure)
            written.append(path)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            log.warning("skipped %s: %s", name, exc)
    return written

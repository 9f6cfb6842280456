"""What a benchmark runs: optimizers x tracks x seeds, and how to spell them.

:class:`BenchConfig` is the whole plan of a bench. It is saved as
``bench.json`` in the bench folder and read back by ``nnopt report``, so a
report needs nothing but the folder. The parsers here turn the command line's
compact spellings into it:

* optimizers: ``adam,adamw:lr=3e-3,weight_decay=0.1`` (a comma-separated
  token with ``=`` but no ``:`` belongs to the spec before it), or a JSON
  file (``opts.json`` or ``@opts.json``);
* tracks: ``4,7,10``;
* seeds: a count (``32``, derived from a base string), a comma list
  (``a,b,c``; a single seed that is a number needs a trailing comma, ``7,``),
  or ``@file`` with one seed per line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nnopt.bench.jobs import Job
from nnopt.data import Profile, get_profile
from nnopt.loop import LoopSettings
from nnopt.optimizers.registry import OptimizerSpec, parse_spec
from nnopt.scoring import TRACKS, Difficulty
from nnopt.seeds import derive_seeds, parse_seed

__all__ = [
    "DEFAULT_ACCURACY_FACTORS",
    "BenchConfig",
    "parse_accuracy_factors",
    "parse_optimizers",
    "parse_seeds",
    "parse_tracks",
    "split_optimizer_list",
]

DEFAULT_ACCURACY_FACTORS = (0, 1000, 2000, 2500, 3000)
CONFIG_FORMAT = 1  # bump when bench.json changes incompatibly


@dataclass(frozen=True)
class BenchConfig:
    """Everything that determines a bench's jobs, plus how to report them."""

    optimizers: tuple[OptimizerSpec, ...]  # compared on the same seeds
    tracks: tuple[int, ...]  # n_hidden values
    seeds: tuple[str, ...]  # instance seeds, shared by every optimizer
    profile: Profile = field(default_factory=lambda: get_profile("tig"))
    loop: LoopSettings = field(default_factory=LoopSettings)
    device: str = "cpu"  # not part of a job's identity: resuming may move it
    bound: bool = True  # compute the Bayes limit per seed
    baseline: str | None = None  # optimizer label; None means the first
    accuracy_factors: tuple[int, ...] = DEFAULT_ACCURACY_FACTORS

    def __post_init__(self) -> None:
        if not self.optimizers:
            raise ValueError("a bench needs at least one optimizer")
        if not self.tracks:
            raise ValueError("a bench needs at least one track (n_hidden)")
        if not self.seeds:
            raise ValueError("a bench needs at least one seed")
        _no_duplicates("optimizer", [o.label for o in self.optimizers])
        _no_duplicates("track", [str(t) for t in self.tracks])
        _no_duplicates("seed", list(self.seeds))
        for track in self.tracks:
            Difficulty(track)
        for af in self.accuracy_factors:
            Difficulty(4, af)
        if self.baseline is not None and self.baseline not in self.labels:
            raise ValueError(
                f"baseline {self.baseline!r} is not one of the bench's optimizers "
                f"({', '.join(self.labels)})"
            )

    @property
    def labels(self) -> list[str]:
        return [o.label for o in self.optimizers]

    @property
    def baseline_label(self) -> str:
        return self.baseline or self.optimizers[0].label

    def find_label(self, name: str) -> str:
        """The label of the optimizer ``name`` means: its label as written or
        normalised (``lr=3e-3`` reads as ``lr=0.003``), or a unique reference."""
        if name in self.labels:
            return name
        normalised = parse_spec(name).label
        if normalised in self.labels:
            return normalised
        matches = [o.label for o in self.optimizers if o.ref == name]
        if len(matches) == 1:
            return matches[0]
        raise ValueError(
            f"{name!r} is not one of the bench's optimizers; choose one of "
            f"{', '.join(self.labels)}"
        )

    def jobs(self) -> list[Job]:
        """Every job, seed-major: a partial bench still holds paired results."""
        return [
            Job(
                optimizer=spec,
                n_hidden=track,
                seed=seed,
                profile=self.profile,
                device=self.device,
                loop=self.loop,
            )
            for seed in self.seeds
            for track in self.tracks
            for spec in self.optimizers
        ]

    def fingerprint(self) -> str:
        """A short hash of what determines the jobs (not device or reporting)."""
        ident = {
            "optimizers": [o.to_dict() for o in self.optimizers],
            "tracks": list(self.tracks),
            "seeds": list(self.seeds),
            "profile": self.profile.to_dict(),
            "loop": asdict(self.loop),
        }
        text = json.dumps(ident, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def default_dir_name(self) -> str:
        """A folder name that the same command always picks, so reruns resume."""
        names = "_".join(
            re.sub(r"[^A-Za-z0-9.]+", "-", o.ref).strip("-") for o in self.optimizers
        )
        tracks = ".".join(str(t) for t in self.tracks)
        return f"{names[:48]}-h{tracks}-s{len(self.seeds)}-{self.fingerprint()}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CONFIG_FORMAT,
            "optimizers": [{**o.to_dict(), "label": o.label} for o in self.optimizers],
            "tracks": list(self.tracks),
            "seeds": list(self.seeds),
            "profile": self.profile.to_dict(),
            "loop": asdict(self.loop),
            "device": self.device,
            "bound": self.bound,
            "baseline": self.baseline_label,
            "accuracy_factors": list(self.accuracy_factors),
            "n_jobs": len(self.optimizers) * len(self.tracks) * len(self.seeds),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        if data.get("format") != CONFIG_FORMAT:
            raise ValueError(
                f"bench.json has format {data.get('format')!r}; this nnopt reads "
                f"format {CONFIG_FORMAT}"
            )
        try:
            return cls(
                optimizers=tuple(
                    OptimizerSpec(o["ref"], dict(o["hparams"]))
                    for o in data["optimizers"]
                ),
                tracks=tuple(int(t) for t in data["tracks"]),
                seeds=tuple(str(s) for s in data["seeds"]),
                profile=Profile.from_dict(data["profile"]),
                loop=LoopSettings(**data["loop"]),
                device=str(data.get("device", "cpu")),
                bound=bool(data.get("bound", True)),
                baseline=data.get("baseline"),
                accuracy_factors=tuple(
                    data.get("accuracy_factors", DEFAULT_ACCURACY_FACTORS)
                ),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bench.json is incomplete or malformed: {exc}") from exc


def _no_duplicates(what: str, items: list[str]) -> None:
    repeated = sorted(x for x, n in Counter(items).items() if n > 1)
    if repeated:
        raise ValueError(
            f"{what} {', '.join(repeated)} is listed more than once; "
            f"every {what} must be distinct"
        )


def split_optimizer_list(text: str) -> list[str]:
    """Split ``--optimizers`` at commas that start a new optimizer spec.

    Specs carry commas themselves (``adam:lr=1e-3,weight_decay=0.01``): a
    token with ``=`` but no ``:`` continues the spec before it.
    """
    specs: list[str] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if "=" in token and ":" not in token:
            if not specs:
                raise ValueError(
                    f"hyperparameter {token!r} has no optimizer before it; write "
                    "NAME:key=value, e.g. adam:lr=1e-3"
                )
            specs[-1] += "," + token
        else:
            specs.append(token)
    if not specs:
        raise ValueError("no optimizers given; try --optimizers adam,adamw")
    return specs


def _load_optimizer_file(path: Path) -> list[OptimizerSpec]:
    """Specs from JSON: a list of spec strings or ``{"ref", "hparams"}``
    objects, or an object mapping a name to its hyperparameters."""
    if not path.is_file():
        raise ValueError(f"optimizer file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and ("ref" in data or "optimizer" in data):
        return [parse_spec(f"@{path}")]  # one spec, e.g. nnopt tune's best.json
    if isinstance(data, dict):
        data = [{"ref": k, "hparams": v} for k, v in data.items()]
    if not isinstance(data, list):
        raise ValueError(
            f"{path} must hold a list of optimizer specs or an object mapping "
            'names to hyperparameters, e.g. {"adam": {"lr": 0.003}}'
        )
    specs = []
    for item in data:
        if isinstance(item, str):
            specs.append(parse_spec(item))
        elif (
            isinstance(item, dict)
            and isinstance(item.get("ref"), str)
            and isinstance(item.get("hparams", {}), dict)
        ):
            specs.append(OptimizerSpec(item["ref"], dict(item.get("hparams", {}))))
        else:
            raise ValueError(
                f"{path}: cannot read optimizer {item!r}; write a spec string "
                '("adam:lr=3e-3") or {"ref": "adam", "hparams": {"lr": 0.003}}'
            )
    return specs


def parse_optimizers(text: str) -> list[OptimizerSpec]:
    """``--optimizers``: specs and JSON files (``x.json`` or ``@x.json``)."""
    specs: list[OptimizerSpec] = []
    for token in split_optimizer_list(text):
        if token.endswith(".json"):
            specs.extend(_load_optimizer_file(Path(token.removeprefix("@"))))
        else:
            specs.append(parse_spec(token))
    return specs


def parse_tracks(text: str) -> list[int]:
    """``--tracks 4,7,10``: hidden-layer counts."""
    tracks = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        try:
            track = int(token)
        except ValueError:
            raise ValueError(
                f"track {token!r} is not an integer; write e.g. --tracks "
                f"{','.join(map(str, TRACKS))}"
            ) from None
        Difficulty(track)
        tracks.append(track)
    if not tracks:
        raise ValueError("no tracks given; try --tracks 4,7,10")
    return tracks


def parse_seeds(text: str, base: str = "bench") -> list[str]:
    """``--seeds``: a count, a comma list, or ``@file`` (one seed per line).

    A count ``n`` gives ``derive_seeds(base, n)``. In a file, blank lines and
    lines starting with ``#`` are skipped.
    """
    text = text.strip()
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise ValueError(f"seed file {path} does not exist")
        seeds = [
            line.strip()
            for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not seeds:
            raise ValueError(f"seed file {path} holds no seeds")
    elif text.isdigit():
        seeds = derive_seeds(base, int(text))
    else:
        seeds = [s.strip() for s in text.split(",") if s.strip()]
        if not seeds:
            raise ValueError("no seeds given; pass a count (32), a list or @file")
    for seed in seeds:
        parse_seed(seed)
    _no_duplicates("seed", seeds)
    return seeds


def parse_accuracy_factors(text: str) -> list[int]:
    """``--accuracy-factors 0,1000,2000``."""
    factors = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        try:
            af = int(token)
        except ValueError:
            raise ValueError(
                f"accuracy factor {token!r} is not an integer; write e.g. 0,1000,2000"
            ) from None
        Difficulty(4, af)
        factors.append(af)
    if not factors:
        raise ValueError("no accuracy factors given; try 0,1000,2000,2500,3000")
    return factors

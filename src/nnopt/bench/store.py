"""A bench folder: durable result files that a report is rebuilt from.

A bench folder holds::

    bench.json        the plan (BenchConfig): optimizers, tracks, seeds, loop
    environment.json  versions, machine, git commit (nnopt.artifacts)
    results.jsonl     one JSON row per finished job, appended as jobs finish
    bound.jsonl       the Bayes limit per seed, when the bench computes it
    bench.lock        held while a bench writes here
    report.md, summary.csv, *.png   the report, rebuilt by ``nnopt report``

Every row is written with one ``write`` of a whole line, then flushed and
fsynced, so killing the process (even with SIGKILL) loses only jobs in flight
and at worst leaves a truncated last line. Readers skip such a line and
:meth:`BenchDir.repair` cuts it off before anything is appended.

A job can appear more than once in ``results.jsonl``: a failed job is retried
when the bench is rerun, and each attempt is kept. :func:`latest_rows` picks
one row per job: its ``ok`` row if it has one, else its last attempt.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nnopt.artifacts import environment, write_json
from nnopt.bench.config import BenchConfig

__all__ = ["BenchDir", "BenchLockedError", "append_row", "latest_rows", "read_rows"]

log = logging.getLogger(__name__)


class BenchLockedError(RuntimeError):
    """Another process is writing to the same bench folder."""


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line and make it durable before returning."""
    line = json.dumps(row) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every readable row of a JSON-lines file; a missing file has none.

    A line that does not parse (the truncated end of a killed write) is
    skipped with a warning.
    """
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning(
                    "%s line %d is not a whole JSON row (a write cut short?); "
                    "skipping it",
                    path,
                    number,
                )
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def latest_rows(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per job key: the ``ok`` row if any, else the last attempt."""
    chosen: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row.get("key")
        if key is None:
            continue
        if chosen.get(key, {}).get("status") != "ok":
            chosen[key] = row
    return chosen


class BenchDir:
    """The files of one bench folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "bench.json"

    @property
    def environment_path(self) -> Path:
        return self.path / "environment.json"

    @property
    def results_path(self) -> Path:
        return self.path / "results.jsonl"

    @property
    def bound_path(self) -> Path:
        return self.path / "bound.jsonl"

    @property
    def lock_path(self) -> Path:
        return self.path / "bench.lock"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def read_config(self) -> BenchConfig:
        if not self.path.is_dir():
            raise ValueError(f"{self.path} is not a folder; pass a bench folder")
        if not self.config_path.is_file():
            raise ValueError(
                f"{self.path} has no bench.json, so it is not a bench folder "
                "(nnopt bench writes one)"
            )
        try:
            data = json.loads(self.config_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.config_path} is not valid JSON: {exc}") from exc
        return BenchConfig.from_dict(data)

    def write_config(self, config: BenchConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config_path, config.to_dict())
        write_json(self.environment_path, environment(config.device))

    def repair(self) -> None:
        """Cut a truncated last line off the JSON-lines files.

        Without this, the next append would run on from the broken line and
        make the new row unreadable too.
        """
        for path in (self.results_path, self.bound_path):
            if not path.is_file():
                continue
            with open(path, "rb+") as fh:
                data = fh.read()
                if not data or data.endswith(b"\n"):
                    continue
                keep = data.rfind(b"\n") + 1
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
            log.warning(
                "%s ended in a truncated row (a killed write); removed its %d bytes",
                path,
                len(data) - keep,
            )

    def results(self) -> dict[str, dict[str, Any]]:
        """One row per finished job, by key (see :func:`latest_rows`)."""
        return latest_rows(read_rows(self.results_path))

    def append_result(self, row: dict[str, Any]) -> None:
        append_row(self.results_path, row)

    def bounds(self) -> dict[str, dict[str, Any]]:
        """Bayes-limit rows by their key (seed and profile)."""
        return latest_rows(read_rows(self.bound_path))

    def append_bound(self, row: dict[str, Any]) -> None:
        append_row(self.bound_path, row)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for writing; a second bench on it fails at once.

        The lock is an advisory ``flock``; the system drops it when the
        process dies, so a killed bench never leaves the folder locked.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not on POSIX: run unlocked
            yield
            return
        with open(self.lock_path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                raise BenchLockedError(
                    f"another nnopt bench (pid {holder}) is writing to {self.path}; "
                    "wait for it to finish or pass a different --out"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

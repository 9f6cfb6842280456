"""``nnopt tune``: the space format, seeds, pruning, resuming, sharing a study,
and a best.json that ``nnopt run`` accepts.

Studies here are tiny (n_hidden 2, a few epochs, two seeds) so the file runs
in seconds; the two-process test is the slowest, mostly interpreter start.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

import nnopt.tune as tune_module
from nnopt.cli import app
from nnopt.loop import LoopSettings
from nnopt.optimizers.registry import OptimizerSpec, parse_spec
from nnopt.tune import (
    SearchSpace,
    SpaceError,
    StudyMismatchError,
    TuneSettings,
    check_disjoint_seeds,
    count_trials,
    open_study,
    run_trials,
    sqlite_url,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "beta1": {"type": "float", "low": 0.8, "high": 0.95},
    "amsgrad": {"type": "categorical", "choices": [True, False]},
}
TINY = LoopSettings(max_epochs=3)


def _settings(**changes) -> TuneSettings:
    base = {
        "optimizer": parse_spec("adam"),
        "space": SearchSpace.from_dict(SPACE),
        "tracks": (2,),
        "tune_seeds": ("tune-0", "tune-1"),
        "eval_seeds": ("eval-0", "eval-1"),
        "loop": TINY,
        "report_every": 1,
    }
    return TuneSettings(**{**base, **changes})


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


# --- the space file -----------------------------------------------------------


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({}, "non-empty JSON object"),
        ([1, 2], "non-empty JSON object"),
        ({"lr": 0.1}, "expected an object"),
        ({"lr": {"type": "floaty", "low": 0, "high": 1}}, '"type" must be one of'),
        ({"lr": {"type": "float", "low": 1e-4, "hi": 1}}, "unknown key(s) hi"),
        ({"lr": {"type": "float", "low": 1e-4}}, 'needs "low" and "high"'),
        ({"lr": {"type": "float", "low": "a", "high": 1}}, "finite number"),
        ({"lr": {"type": "float", "low": 1e-2, "high": 1e-4}}, "must be below"),
        ({"lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "low > 0"),
        ({"lr": {"type": "float", "low": 0, "high": 1, "log": "yes"}}, "true or false"),
        (
            {"lr": {"type": "float", "low": 1e-4, "high": 1, "log": True, "step": 0.1}},
            "step and log",
        ),
        ({"n": {"type": "int", "low": 1.5, "high": 4}}, "finite integer"),
        ({"n": {"type": "int", "low": 1, "high": 4, "step": 0.5}}, "step of an int"),
        ({"nesterov": {"type": "categorical", "choices": []}}, "non-empty list"),
        ({"betas": {"type": "categorical", "choices": [[0.9, 0.99]]}}, "beta1, beta2"),
        ({"x": {"type": "categorical", "choices": [1, 1]}}, "repeat a value"),
        ({"weight-decay": {"type": "float", "low": 0, "high": 1}}, "identifier"),
    ],
)
def test_bad_spaces_are_refused_with_the_reason(space, message) -> None:
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_dict(space)
    assert message in str(info.value)


def test_space_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "space.json"
    path.write_text("{not json")
    with pytest.raises(SpaceError, match="space.json is not valid JSON"):
        SearchSpace.from_file(path)
    with pytest.raises(SpaceError, match="cannot read space file"):
        SearchSpace.from_file(tmp_path / "missing.json")
    _write(path, {"lr": {"type": "float", "low": 1, "high": 0}})
    with pytest.raises(SpaceError, match=r"space file .*space.json: parameter 'lr'"):
        SearchSpace.from_file(path)


def test_space_suggests_every_parameter_and_round_trips() -> None:
    space = SearchSpace.from_dict(
        {**SPACE, "warmup": {"type": "int", "low": 0, "high": 100, "step": 10}}
    )
    trial = optuna.trial.FixedTrial(
        {"lr": 1e-3, "beta1": 0.9, "amsgrad": False, "warmup": 20}
    )
    assert space.suggest(trial) == {
        "lr": 1e-3,
        "beta1": 0.9,
        "amsgrad": False,
        "warmup": 20,
    }
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_a_name_the_optimizer_rejects_fails_before_any_trial() -> None:
    settings = _settings(
        space=SearchSpace.from_dict({"lrr": {"type": "float", "low": 0, "high": 1}})
    )
    with pytest.raises(SpaceError, match="does not accept"):
        settings.check_optimizer()


def test_a_hyperparameter_cannot_be_fixed_and_searched() -> None:
    with pytest.raises(ValueError, match="fixed in the optimizer spec"):
        _settings(optimizer=OptimizerSpec("adam", {"lr": 1e-3}))


# --- seeds --------------------------------------------------------------------


def test_held_out_seeds_must_differ_from_tuning_seeds() -> None:
    with pytest.raises(ValueError, match="must never be tuned on"):
        _settings(eval_seeds=("eval-0", "tune-1"))
    hex_seed = "ab" * 32
    with pytest.raises(ValueError, match="also tuning seeds"):  # same bytes
        check_disjoint_seeds([hex_seed], [hex_seed.upper()])
    check_disjoint_seeds(["tune-0"], ["eval-0"])


def test_cli_refuses_overlapping_seeds(tmp_path: Path) -> None:
    space = _write(tmp_path / "space.json", SPACE)
    result = CliRunner().invoke(
        app,
        ["tune", "adam", "--space", str(space), "--tune-seed-base", "same"]
        + ["--eval-seed-base", "same", "--out", str(tmp_path / "t")],
    )
    assert result.exit_code == 2
    assert "must never be tuned on" in result.output


def test_cli_reports_a_bad_space(tmp_path: Path) -> None:
    space = _write(tmp_path / "space.json", {"lr": {"type": "float", "low": 1}})
    result = CliRunner().invoke(app, ["tune", "adam", "--space", str(space)])
    assert result.exit_code == 2
    assert 'needs "low" and "high"' in result.output


# --- pruning ------------------------------------------------------------------


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_a_pruned_trial_stops_inside_the_training_loop() -> None:
    settings = _settings(loop=LoopSettings(max_epochs=50))
    study = open_study(
        settings,
        storage=optuna.storages.InMemoryStorage(),
        study_name="prune",
        pruner=_AlwaysPrune(),
    )
    run_trials(study, settings, n_trials=1)

    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [0]  # run 0, epoch 0: stopped there
    assert count_trials(study) == 1


def test_reports_are_the_running_mean_of_validation_quality() -> None:
    settings = _settings(report_every=3)
    study = open_study(
        settings,
        storage=optuna.storages.InMemoryStorage(),
        study_name="steps",
        pruner=optuna.pruners.NopPruner(),
    )
    run_trials(study, settings, n_trials=1)

    (trial,) = study.trials
    # run i, epoch e is step i * max_epochs + e; every 3rd epoch and the last
    assert sorted(trial.intermediate_values) == [2, 5]
    assert trial.user_attrs["qualities"] and len(trial.user_attrs["qualities"]) == 2
    assert trial.value == pytest.approx(sum(trial.user_attrs["qualities"]) / 2)


# --- storage: resume and share ----------------------------------------------


def test_a_killed_study_resumes_from_sqlite(tmp_path: Path, monkeypatch) -> None:
    settings = _settings()
    url = sqlite_url(tmp_path / "study.db")
    real_run = tune_module.run_challenge
    calls = {"n": 0}

    def dies_in_third_trial(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # two runs per trial: trial 2's first run
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)

    monkeypatch.setattr(tune_module, "run_challenge", dies_in_third_trial)
    study = open_study(settings, storage=url, study_name="resume")
    with pytest.raises(KeyboardInterrupt):
        run_trials(study, settings, n_trials=4)
    before = {t.number: t.value for t in study.trials if t.value is not None}
    assert len(before) == 2

    monkeypatch.setattr(tune_module, "run_challenge", real_run)
    again = open_study(settings, storage=url, study_name="resume")  # a new process
    assert count_trials(again) == 2
    assert run_trials(again, settings, n_trials=4) == 2
    states = [t.state.name for t in again.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert {t.number: t.value for t in again.trials[:2]} == before
    assert run_trials(again, settings, n_trials=4) == 0  # nothing left to do


def test_a_study_refuses_other_settings(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "study.db")
    open_study(_settings(), storage=url, study_name="s")
    open_study(_settings(eval_seeds=("other",)), storage=url, study_name="s")
    with pytest.raises(StudyMismatchError, match="tracks, tune_seeds differ"):
        open_study(
            _settings(tracks=(3,), tune_seeds=("t",)), storage=url, study_name="s"
        )


def test_two_processes_share_one_study(tmp_path: Path) -> None:
    """An ``nnopt tune`` process and this one work on one SQLite study; this
    one joins once the other has finished a trial, so both surely take part."""
    space = _write(tmp_path / "space.json", SPACE)
    url = sqlite_url(tmp_path / "shared.db")
    command = [sys.executable, "-m", "nnopt", "tune", "adam", "--space", str(space)]
    command += ["--trials", "8", "--tracks", "2", "--seeds", "2", "--max-epochs", "3"]
    command += ["--no-prune", "--no-eval", "--storage", url, "--study-name", "shared"]
    other = subprocess.Popen(
        [*command, "--out", str(tmp_path / "other")],
        env={**os.environ, "COLUMNS": "120"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    settings = _settings(loop=LoopSettings(max_epochs=3), report_every=20)
    deadline = time.monotonic() + 60
    while not _has_finished_trial(tmp_path / "shared.db") and other.poll() is None:
        assert time.monotonic() < deadline, "the other process never got going"
        time.sleep(0.2)

    study = open_study(
        settings,
        storage=url,
        study_name="shared",
        pruner=optuna.pruners.NopPruner(),
    )
    ran_here = run_trials(study, settings, n_trials=8)
    output = other.communicate(timeout=60)[0]
    assert other.returncode == 0, output

    complete = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert 8 <= len(complete) <= 9  # one trial may still have been running
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) == 2 and ran_here >= 1, output
    assert sorted(t.number for t in study.get_trials()) == list(range(len(complete)))


def _has_finished_trial(path: Path) -> bool:
    """Read the study file directly: cheap enough to poll."""
    if not path.is_file():
        return False
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as connection:
        try:
            (count,) = connection.execute(
                "SELECT count(*) FROM trials WHERE state = 'COMPLETE'"
            ).fetchone()
        except sqlite3.OperationalError:  # no tables yet
            return False
    return count > 0


# --- the whole command, and its best.json --------------------------------------


def test_tune_writes_best_json_that_run_accepts(tmp_path: Path) -> None:
    space = _write(tmp_path / "space.json", SPACE)
    out = tmp_path / "tune"
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["tune", "adam", "--space", str(space), "--trials", "3", "--tracks", "2"]
        + ["--seeds", "2", "--eval-seeds", "2", "--max-epochs", "3"]
        + ["--out", str(out)],
    )
    assert result.exit_code == 0, result.output

    best = json.loads((out / "best.json").read_text())
    assert best["ref"] == "adam" and set(best["hparams"]) == set(SPACE)
    assert best["tuning"]["seeds"] == ["tune-0", "tune-1"]
    assert best["evaluation"]["seeds"] == ["eval-0", "eval-1"]
    rows = [json.loads(line) for line in (out / "eval" / "results.jsonl").open()]
    assert {r["seed"] for r in rows} == {"eval-0", "eval-1"}  # held out only
    assert {r["optimizer"] for r in rows} == {"adam", best["label"]}
    assert len((out / "trials.jsonl").read_text().splitlines()) == 3
    for name in ("history.png", "importance.png", "study.db", "tune.json"):
        assert (out / name).is_file(), name

    ran = runner.invoke(
        app,
        ["run", "--optimizer", f"@{out / 'best.json'}", "--n-hidden", "2"]
        + ["--max-epochs", "2", "--json", "--out", str(tmp_path / "run")],
    )
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.stdout.strip().splitlines()[-1])
    assert summary["optimizer"] == best["label"]

    again = runner.invoke(  # everything done: straight to the outputs
        app,
        ["tune", "adam", "--space", str(space), "--trials", "3", "--tracks", "2"]
        + ["--seeds", "2", "--eval-seeds", "2", "--max-epochs", "3"]
        + ["--out", str(out)],
    )
    assert again.exit_code == 0, again.output
    assert "ran 0 trials here" in again.output


def test_spec_files_give_reference_and_hyperparameters(tmp_path: Path) -> None:
    path = _write(tmp_path / "best.json", {"ref": "adam", "hparams": {"lr": 0.01}})
    assert parse_spec(f"@{path}") == OptimizerSpec("adam", {"lr": 0.01})
    assert parse_spec(f"@{path}:lr=0.5,amsgrad=true") == OptimizerSpec(
        "adam", {"lr": 0.5, "amsgrad": True}
    )
    alias = _write(tmp_path / "alias.json", {"optimizer": "sgd"})
    assert parse_spec(f"@{alias}") == OptimizerSpec("sgd", {})

    for data, message in [
        ([1], "must hold a JSON object"),
        ({"hparams": {}}, 'needs a "ref"'),
        ({"ref": "adam", "hparams": [1]}, "must be a JSON object"),
    ]:
        bad = _write(tmp_path / "bad.json", data)
        with pytest.raises(ValueError, match=message):
            parse_spec(f"@{bad}")
    with pytest.raises(ValueError, match="cannot read optimizer file"):
        parse_spec(f"@{tmp_path / 'missing.json'}")

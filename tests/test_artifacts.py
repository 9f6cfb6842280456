"""Run folders: what a run writes, and verifying a folder from its files alone."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, safe_open, save_file

from nnopt.artifacts import (
    CONFIG,
    ENVIRONMENT,
    METRIC_FIELDS,
    METRICS,
    RESULT,
    SOLUTION,
    VerifyError,
    verify_run_dir,
    write_json,
)
from nnopt.data import get_profile
from nnopt.loop import LoopSettings
from nnopt.optimizers.registry import parse_spec
from nnopt.runner import RunConfig, RunResult, run_challenge
from nnopt.seeds import parse_seed

CONFIG_ = RunConfig(
    seed="artifacts",
    n_hidden=2,
    accuracy_factor=500,
    optimizer=parse_spec("adam:lr=2e-3"),
    profile=get_profile("tig", noise_std=0.5),
    loop=LoopSettings(max_epochs=2),
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, RunResult]:
    out = tmp_path_factory.mktemp("run") / "folder"
    return out, run_challenge(CONFIG_, out_dir=out)


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    """A private copy of the finished run folder, free to tamper with."""
    return Path(shutil.copytree(finished[0], tmp_path / "copy"))


def test_run_folder_holds_every_file(finished) -> None:
    out, _ = finished
    names = {p.name for p in out.iterdir()}
    assert names == {CONFIG, ENVIRONMENT, METRICS, SOLUTION, RESULT}


def test_config_round_trips(finished) -> None:
    out, _ = finished
    data = json.loads((out / CONFIG).read_text())
    assert RunConfig.from_dict(data) == CONFIG_
    assert data["seed_hex"] == bytes(parse_seed("artifacts")).hex()
    assert data["profile"]["noise_std"] == 0.5
    assert data["optimizer"] == {"ref": "adam", "hparams": {"lr": 2e-3}}


def test_environment_records_versions(finished) -> None:
    env = json.loads((finished[0] / ENVIRONMENT).read_text())
    assert env["torch"] == torch.__version__
    assert env["device"] == "cpu"
    assert {"nnopt", "python", "numpy", "platform", "git_commit"} <= set(env)


def test_metrics_has_one_row_per_epoch(finished) -> None:
    out, result = finished
    with open(out / METRICS, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == METRIC_FIELDS
    assert len(rows) == result.training.epochs_run
    for row, record in zip(rows, result.training.history):
        assert int(row["epoch"]) == record.epoch
        assert float(row["train_loss"]) == record.train_loss
        assert float(row["val_loss"]) == record.val_loss


def test_solution_and_result_match_the_run(finished) -> None:
    out, result = finished
    tensors = load_file(str(out / SOLUTION))
    assert set(tensors) == set(result.training.solution)
    for name, tensor in tensors.items():
        assert torch.equal(tensor, result.training.solution[name]), name
    with safe_open(str(out / SOLUTION), "pt") as fh:
        assert fh.metadata() == {"epochs_used": str(result.training.epochs_used)}
    claimed = json.loads((out / RESULT).read_text())
    assert claimed == json.loads(json.dumps(result.summary()))
    assert claimed["run_dir"] == str(out)


def test_verify_recomputes_the_same_score(finished) -> None:
    out, result = finished
    report = verify_run_dir(out)
    assert report.score == result.score
    assert report.matches_claim is True
    assert report.config == CONFIG_


def test_verify_without_result_json(run_copy, finished) -> None:
    (run_copy / RESULT).unlink()
    report = verify_run_dir(run_copy)
    assert report.claimed is None
    assert report.matches_claim is None
    assert report.score == finished[1].score


def test_tampered_weight_changes_the_recomputed_score(run_copy, finished) -> None:
    tensors = load_file(str(run_copy / SOLUTION))
    tensors["linear.0.weight"][0, 0] += 0.5
    save_file(tensors, str(run_copy / SOLUTION))
    report = verify_run_dir(run_copy)
    assert report.score.test_loss != finished[1].score.test_loss
    assert report.matches_claim is False


def test_tampered_claim_is_caught(run_copy) -> None:
    claimed = json.loads((run_copy / RESULT).read_text())
    claimed["test_loss"] *= 0.5
    write_json(run_copy / RESULT, claimed)
    assert verify_run_dir(run_copy).matches_claim is False


def remove(path: Path) -> None:
    path.unlink()


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not a safetensors file")


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def drop_tensor(path: Path) -> None:
    tensors = load_file(str(path))
    del tensors["bn.0.gamma"]
    save_file(tensors, str(path))


def wrong_shape(path: Path) -> None:
    tensors = load_file(str(path))
    tensors["linear.1.weight"] = torch.zeros(256, 128)
    save_file(tensors, str(path))


def bad_json(path: Path) -> None:
    path.write_text("{not json")


def wrong_depth(path: Path) -> None:
    data = json.loads(path.read_text())
    data["n_hidden"] = 3
    path.write_text(json.dumps(data))


def config_without_seed(path: Path) -> None:
    data = json.loads(path.read_text())
    del data["seed"]
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("name", "damage", "match"),
    [
        (SOLUTION, remove, "solution.safetensors is missing"),
        (CONFIG, remove, "config.json is missing"),
        (SOLUTION, garbage, "is not readable safetensors"),
        (SOLUTION, truncate, "is not readable safetensors"),
        (SOLUTION, drop_tensor, r"does not fit the model.*missing \['bn.0.gamma'\]"),
        (SOLUTION, wrong_shape, r"linear.1.weight has shape \(256, 128\)"),
        (CONFIG, bad_json, "is not a valid run config"),
        (CONFIG, config_without_seed, "incomplete or malformed"),
        (CONFIG, wrong_depth, "solution does not fit the model"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_broken_folders_raise_verify_error(run_copy, name, damage, match) -> None:
    damage(run_copy / name)
    with pytest.raises(VerifyError, match=match):
        verify_run_dir(run_copy)


def test_verify_needs_a_folder(tmp_path) -> None:
    with pytest.raises(VerifyError, match="is not a folder"):
        verify_run_dir(tmp_path / "nowhere")


def test_write_json_replaces_atomically(tmp_path) -> None:
    path = tmp_path / "x.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_run_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="n_hidden"):
        RunConfig(n_hidden=1)
    with pytest.raises(ValueError, match="accuracy_factor"):
        RunConfig(accuracy_factor=4000)
    with pytest.raises(ValueError, match="seed is empty"):
        RunConfig(seed=" ")
    with pytest.raises(ValueError, match="incomplete or malformed"):
        RunConfig.from_dict({"seed": "0"})

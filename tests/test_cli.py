"""The ``nnopt`` command line: run, verify, data, optimizers, and its errors.

Every user mistake must end with exit code 2 and a message naming the
problem; ``nnopt verify`` exits 0 on pass and 1 on fail.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from nnopt.cli import app

# A short run on an easy variant: with noise std 1 the threshold is about 8
# per element, so two epochs pass at accuracy factor 0 and fail at 3999.
RUN_ARGS = ["--seed", "cli", "--n-hidden", "2", "--max-epochs", "2"]
EASY = ["--set", "noise_std=1.0"]
JSON_KEYS = {
    "seed",
    "profile",
    "n_hidden",
    "accuracy_factor",
    "optimizer",
    "test_loss",
    "threshold",
    "passed",
    "quality",
    "epochs_used",
    "epochs_run",
    "diverged",
    "wall_time_s",
}


def case(args: list[str], phrases: list[str]):
    return pytest.param(args, phrases, id=" ".join(args))


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def expect_error(result, *phrases: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    message = flat(result.stderr)
    assert "error:" in message
    for phrase in phrases:
        assert phrase in message, message


@pytest.fixture(scope="module")
def passing_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cli") / "pass"
    result = invoke("run", *RUN_ARGS, *EASY, "--json", "--out", out)
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.fixture
def run_copy(passing_run, tmp_path) -> Path:
    return Path(shutil.copytree(passing_run[0], tmp_path / "copy"))


def test_run_json_prints_one_object_with_the_documented_keys(passing_run) -> None:
    out, summary = passing_run
    assert set(summary) >= JSON_KEYS
    assert summary["seed"] == "cli"
    assert summary["profile"] == "tig"
    assert (summary["n_hidden"], summary["accuracy_factor"]) == (2, 0)
    assert summary["optimizer"] == "adam"
    assert summary["epochs_run"] == 2
    assert 1 <= summary["epochs_used"] <= 2
    assert summary["diverged"] is False
    assert summary["passed"] is True
    assert summary["test_loss"] <= summary["threshold"]
    assert -10 <= summary["quality"] <= 10
    assert summary["run_dir"] == str(out)
    assert json.loads((out / "result.json").read_text()) == summary


def test_run_table_output(tmp_path) -> None:
    result = invoke("run", *RUN_ARGS, "--max-epochs", "1", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    for word in ("test_loss", "threshold", "quality", "epochs_used", "artifacts:"):
        assert word in result.stdout


def test_verify_round_trip_passes(passing_run) -> None:
    out, summary = passing_run
    result = invoke("verify", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["test_loss"] == summary["test_loss"]
    assert report["threshold"] == summary["threshold"]
    assert report["quality"] == summary["quality"]
    assert report["passed"] is True
    assert report["matches_claim"] is True
    text = invoke("verify", out)
    assert text.exit_code == 0
    assert "PASS" in text.stdout


def test_verify_fails_with_exit_1(tmp_path) -> None:
    out = tmp_path / "fail"
    run = invoke(
        "run", *RUN_ARGS, *EASY, "--accuracy-factor", "3999", "--json", "--out", out
    )
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["passed"] is False
    result = invoke("verify", out)
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.stdout


def test_verify_catches_a_tampered_weight(run_copy, passing_run) -> None:
    tensors = load_file(str(run_copy / "solution.safetensors"))
    tensors["linear.0.weight"] = tensors["linear.0.weight"] * 3
    save_file(tensors, str(run_copy / "solution.safetensors"))

    result = invoke("verify", run_copy, "--json")
    assert result.exit_code in (0, 1)
    report = json.loads(result.stdout)
    assert report["test_loss"] != passing_run[1]["test_loss"]
    assert report["matches_claim"] is False
    text = invoke("verify", run_copy)
    assert "result.json claims test loss" in flat(text.stdout)


def test_verify_nan_weights_fail(run_copy) -> None:
    tensors = load_file(str(run_copy / "solution.safetensors"))
    tensors["linear.2.bias"] = torch.full_like(tensors["linear.2.bias"], torch.nan)
    save_file(tensors, str(run_copy / "solution.safetensors"))
    result = invoke("verify", run_copy, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["quality"] == -10.0


def corrupt(path: Path) -> None:
    path.write_bytes(b"\x00" * 64)


def reshape(path: Path) -> None:
    tensors = load_file(str(path))
    tensors["linear.0.weight"] = torch.zeros(256, 2)
    save_file(tensors, str(path))


@pytest.mark.parametrize(
    ("name", "damage", "phrases"),
    [
        ("solution.safetensors", Path.unlink, ["solution.safetensors is missing"]),
        ("config.json", Path.unlink, ["config.json is missing"]),
        ("solution.safetensors", corrupt, ["is not readable safetensors"]),
        (
            "solution.safetensors",
            reshape,
            ["does not fit the model", "linear.0.weight has shape (256, 2)"],
        ),
        ("config.json", corrupt, ["is not a valid run config"]),
    ],
    ids=["no-solution", "no-config", "corrupt-solution", "wrong-shape", "bad-config"],
)
def test_verify_invalid_folder_exits_2(run_copy, name, damage, phrases) -> None:
    damage(run_copy / name)
    expect_error(invoke("verify", run_copy), *phrases)


def test_verify_missing_folder_exits_2(tmp_path) -> None:
    expect_error(invoke("verify", tmp_path / "nowhere"), "is not a folder")


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        case(["--n-hidden", "1"], ["n_hidden must be between 2 and 64"]),
        case(["--n-hidden", "100"], ["n_hidden must be between 2 and 64"]),
        case(["--accuracy-factor", "4000"], ["accuracy_factor must be in [0, 4000)"]),
        case(["--accuracy-factor", "-5"], ["accuracy_factor must be in"]),
        case(["--profile", "nope"], ["unknown profile 'nope'", "tig", "spec"]),
        case(["--optimizer", "nope"], ["unknown optimizer 'nope'"]),
        case(["--optimizer", "adam:lr=-1"], ["Invalid learning rate"]),
        case(["--optimizer", "adam:lr=1,x"], ["bad hyperparameter 'x'"]),
        case(["--optimizer", "adam:bogus=1"], ["bad hyperparameters for optimizer"]),
        case(["--set", "noise_std"], ["--set expects key=value"]),
        case(["--set", "noise_std=abc"], ["is not a number"]),
        case(["--set", "bogus=1"], ["unknown profile setting(s) bogus"]),
        case(["--set", "noise_std=-1"], ["noise_std must be a positive number"]),
        case(["--set", "n_train=0"], ["n_train must be a positive integer"]),
        case(["--device", "tpu"], ["unknown device 'tpu'"]),
        case(["--max-epochs", "0"], ["max_epochs must be a positive integer"]),
        case(["--seed", " "], ["seed is empty"]),
    ],
)
def test_run_rejects_bad_input(tmp_path, args, phrases) -> None:
    out = tmp_path / "run"
    result = invoke("run", *RUN_ARGS, *args, "--out", out)
    expect_error(result, *phrases)
    assert not (out / "solution.safetensors").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu(tmp_path, monkeypatch, device) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = invoke("run", *RUN_ARGS, "--device", device, "--out", tmp_path / "r")
    expect_error(result, f"--device {device}", "no CUDA device is available")
    expect_error(invoke("verify", tmp_path, "--device", device), "no CUDA device")


def test_missing_extra_names_the_pip_extra(tmp_path, monkeypatch) -> None:
    from nnopt.optimizers import registry

    def needs_package(**kw):
        import nnopt_no_such_package  # noqa: F401

    registry.list_optimizers()
    entry = registry.OptimizerEntry("needs-extra", needs_package, "t", "nnopt[extras]")
    monkeypatch.setitem(registry._REGISTRY, "needs-extra", entry)
    result = invoke("run", *RUN_ARGS, "--optimizer", "needs-extra")
    expect_error(result, "pip install 'nnopt[extras]'")


BAD_OPTIMIZERS = {
    "no_step.py": (
        """
        class Optimizer:
            def init_state(self, setup):
                return None
        """,
        ["has no step() hook"],
    ),
    "short_step.py": (
        """
        class Optimizer:
            def init_state(self, setup):
                return None

            def step(self, state, params, grads):
                return [None] * len(params)
        """,
        ["step has signature", "step(state, params, grads, ctx)"],
    ),
    "wrong_shape.py": (
        """
        import torch

        class Optimizer:
            def init_state(self, setup):
                return None

            def step(self, state, params, grads, ctx):
                out = [None] * len(params)
                out[2] = torch.zeros(3, 3)
                return out
        """,
        [
            "optimizer hook failed",
            "step() returned shape (3, 3) at index 2 (linear.1.weight)",
            "expected (256, 256)",
        ],
    ),
    "too_few.py": (
        """
        class Optimizer:
            def init_state(self, setup):
                return None

            def step(self, state, params, grads, ctx):
                return [None]
        """,
        ["step() returned 1 tensors, expected 14"],
    ),
}


@pytest.mark.parametrize("filename", sorted(BAD_OPTIMIZERS))
def test_bad_optimizer_files_exit_2(tmp_path, filename) -> None:
    source, phrases = BAD_OPTIMIZERS[filename]
    path = tmp_path / filename
    path.write_text(textwrap.dedent(source))
    result = invoke("run", *RUN_ARGS, "--optimizer", path, "--out", tmp_path / "r")
    expect_error(result, *phrases)


def test_diverging_optimizer_is_reported_not_crashed(tmp_path) -> None:
    path = tmp_path / "nan.py"
    path.write_text(
        textwrap.dedent(
            """
            class Optimizer:
                def init_state(self, setup):
                    return None

                def step(self, state, params, grads, ctx):
                    scale = -1e-4 if ctx.epoch == 0 else float("nan")
                    return [scale * g for g in grads]
            """
        )
    )
    out = tmp_path / "run"
    result = invoke(
        "run",
        *RUN_ARGS,
        "--max-epochs",
        "5",
        "--optimizer",
        path,
        "--json",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["diverged"] is True
    assert summary["stop_reason"].startswith("diverged")
    assert (summary["epochs_used"], summary["epochs_run"]) == (1, 2)
    assert summary["quality"] > -10
    assert invoke("verify", out, "--json").exit_code in (0, 1)


def test_hyperparameters_and_file_optimizers_reach_the_run(tmp_path) -> None:
    path = tmp_path / "mine.py"
    path.write_text(
        "from nnopt.optimizers.template import TemplateOptimizer as Optimizer\n"
    )
    out = tmp_path / "run"
    result = invoke(
        "run", *RUN_ARGS, "--optimizer", f"{path}:lr=2e-4", "--json", "--out", out
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["optimizer"] == f"{path}:lr=0.0002"
    config = json.loads((out / "config.json").read_text())
    assert config["optimizer"] == {"ref": str(path), "hparams": {"lr": 2e-4}}


@pytest.mark.parametrize(
    ("profile", "d", "k"),
    [("tig", 1, 2), ("spec", 8, 1)],
)
def test_data_csv(tmp_path, profile, d, k) -> None:
    out = tmp_path / "sub" / "data.csv"
    result = invoke("data", "--seed", "7", "--profile", profile, "--out", out)
    assert result.exit_code == 0, result.output
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    header = (
        ["split"]
        + [f"x{i}" for i in range(d)]
        + [f"f{i}" for i in range(k)]
        + [f"y{i}" for i in range(k)]
    )
    assert rows[0] == header
    body = rows[1:]
    assert len(body) == 1450
    assert [r[0] for r in body] == ["train"] * 1000 + ["val"] * 200 + ["test"] * 250
    assert all(len(r) == len(header) for r in body)

    from nnopt.data import generate_instance

    instance = generate_instance("7", profile)
    assert float(body[0][1]) == pytest.approx(float(instance.x[0, 0]), rel=1e-7)
    assert float(body[-1][-1]) == pytest.approx(float(instance.y[-1, -1]), rel=1e-7)


def test_data_with_overrides(tmp_path) -> None:
    out = tmp_path / "small.csv"
    result = invoke("data", "--set", "n_train=10", "--set", "n_outputs=3", "--out", out)
    assert result.exit_code == 0, result.output
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][-3:] == ["y0", "y1", "y2"]
    assert len(rows) == 1 + 10 + 200 + 250


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--profile", "nope"], "unknown profile 'nope'"),
        (["--set", "lengthscale=0"], "lengthscale must be a positive number"),
        (["--seed", ""], "seed is empty"),
    ],
)
def test_data_rejects_bad_input(tmp_path, args, phrase) -> None:
    expect_error(invoke("data", *args, "--out", tmp_path / "d.csv"), phrase)


def test_optimizers_lists_the_registry() -> None:
    result = invoke("optimizers")
    assert result.exit_code == 0
    for name in ("template", "sgd", "adam", "adamw"):
        assert name in result.stdout


def test_default_run_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("run", *RUN_ARGS, "--max-epochs", "1", "--optimizer", "sgd")
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.endswith("-sgd-h2")
    assert (folder / "solution.safetensors").is_file()


@pytest.mark.slow  # a fresh interpreter imports torch: seconds on a busy machine
def test_runs_are_bit_identical_across_processes(tmp_path, passing_run) -> None:
    """A fresh process with another hash seed writes the very same bytes."""
    here, summary = passing_run
    out = tmp_path / "again"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "nnopt", "run", *RUN_ARGS, *EASY, "--json"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    for key in ("test_loss", "best_val_loss", "epochs_used", "quality"):
        assert again[key] == summary[key], key
    solution = "solution.safetensors"
    assert (out / solution).read_bytes() == (here / solution).read_bytes()

    def losses(folder: Path) -> list[tuple[str, str]]:
        with open(folder / "metrics.csv", newline="") as fh:
            return [(r["train_loss"], r["val_loss"]) for r in csv.DictReader(fh)]

    assert losses(out) == losses(here)

"""The Bayes-optimal limit: kernel constants, GP algebra, bound, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from nnopt import scoring
from nnopt.bound import (
    MAX_TRAIN_POINTS,
    BoundResult,
    RbfKernel,
    bayes_bound,
    generating_kernel,
    gp_posterior_mean,
)
from nnopt.cli import app
from nnopt.data import generate_instance, get_profile

runner = CliRunner()


@pytest.fixture(scope="module")
def tig_results() -> list[tuple]:
    out = []
    for seed in ("0", "1"):
        instance = generate_instance(seed, "tig")
        out.append((instance, bayes_bound(instance)))
    return out


def baseline_losses(instance) -> tuple[float, float]:
    """Test MSE of predicting 0 and of predicting the train mean."""
    _, _, y_train = instance.split("train")
    _, _, y_test = instance.split("test")
    y_test = y_test.astype(np.float64)
    zero = float(np.mean(y_test**2))
    train_mean = float(np.mean((y_test - y_train.astype(np.float64).mean(0)) ** 2))
    return zero, train_mean


# ---- the kernel -------------------------------------------------------------


def test_generating_kernel_follows_the_frequency_scale():
    tig = generating_kernel(get_profile("tig"))
    assert tig.lengthscale == pytest.approx(0.3**2)  # w ~ N(0,1) / l^2
    assert tig.variance == 1.0
    spec = generating_kernel(get_profile("spec"))
    assert spec.lengthscale == pytest.approx(0.3)  # w ~ N(0,1) / l
    scaled = generating_kernel(get_profile("tig", amplitude=2.0, frequency_scale=4.0))
    assert scaled.lengthscale == pytest.approx(0.25)
    assert scaled.variance == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("name", "overrides"),
    # spec's 8 inputs put random points too far apart to see the lengthscale,
    # so its frequency rule (power 1) is checked with 2 inputs.
    [("tig", {}), ("spec", {"n_inputs": 2})],
)
def test_kernel_matches_the_generator_monte_carlo(name, overrides):
    # Many outputs share one set of inputs and draw independent a, b, w, so
    # the mean of f(x_i) f(x_j) over outputs estimates Cov(f(x_i), f(x_j)).
    profile = get_profile(
        name, n_outputs=600, n_train=20, n_val=1, n_test=3, amplitude=1.5, **overrides
    )
    instance = generate_instance("kernel-mc", profile)
    f = instance.f.astype(np.float64)
    empirical = f @ f.T / f.shape[1]
    kernel = generating_kernel(profile)

    def misfit(k: RbfKernel) -> float:
        return float(np.mean((empirical - k(instance.x, instance.x)) ** 2))

    assert np.diag(empirical).mean() == pytest.approx(kernel.variance, rel=0.1)
    candidates = [
        RbfKernel(kernel.lengthscale * 0.7, kernel.variance),
        RbfKernel(kernel.lengthscale * 1.4, kernel.variance),
        RbfKernel(kernel.lengthscale, kernel.variance / 2),  # forgot the 2/K
        RbfKernel(profile.lengthscale, kernel.variance),  # used l, not 1/s
    ]
    best = misfit(kernel)
    for other in candidates:
        if math.isclose(other.lengthscale, kernel.lengthscale) and math.isclose(
            other.variance, kernel.variance
        ):
            continue  # on spec, l is 1/s: not a wrong kernel there
        assert best < misfit(other), other


def test_rbf_kernel_matches_a_loop():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    kernel = RbfKernel(lengthscale=0.7, variance=2.5)
    expected = [
        [
            2.5 * math.exp(-sum((p - q) ** 2 for p, q in zip(u, v)) / (2 * 0.49))
            for v in b
        ]
        for u in a
    ]
    np.testing.assert_allclose(kernel(a, b), expected, rtol=1e-12)


# ---- the posterior mean -----------------------------------------------------


def test_posterior_mean_matches_brute_force_conditioning():
    rng = np.random.default_rng(1)
    x_train, x_test = rng.uniform(-1, 1, (7, 2)), rng.uniform(-1, 1, (3, 2))
    y = rng.normal(size=(7, 2))
    kernel, noise = RbfKernel(0.5, 1.3), 0.05

    # Condition the joint Gaussian of (y_train, f_test) with an explicit inverse.
    x_all = np.vstack([x_train, x_test])
    joint = kernel(x_all, x_all)
    k_yy = joint[:7, :7] + noise * np.eye(7)
    k_fy = joint[7:, :7]
    expected = k_fy @ np.linalg.inv(k_yy) @ y

    got = gp_posterior_mean(x_train, y, x_test, kernel=kernel, noise_variance=noise)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    single = gp_posterior_mean(
        x_train, y[:, 0], x_test, kernel=kernel, noise_variance=noise
    )
    assert single.shape == (3,)
    np.testing.assert_allclose(single, expected[:, 0], rtol=1e-9, atol=1e-12)


def test_posterior_mean_interpolates_when_noise_is_tiny():
    x = np.linspace(-1, 1, 9)[:, None]
    y = np.sin(3 * x)
    mean = gp_posterior_mean(x, y, x, kernel=RbfKernel(0.4, 1.0), noise_variance=1e-9)
    np.testing.assert_allclose(mean, y, atol=1e-5)


# ---- the bound on real instances --------------------------------------------


def test_bound_on_tig_sits_at_the_noise_floor_and_beats_baselines(tig_results):
    for instance, result in tig_results:
        zero, train_mean = baseline_losses(instance)
        assert result.test_loss < train_mean / 10
        assert result.test_loss < zero / 10
        assert result.noise_floor < result.test_loss < 1.15 * result.noise_floor
        assert 0.85 < result.quality < 0.88
        assert result.passes_at_zero


def test_bound_on_spec_learns_nothing():
    instance = generate_instance("0", "spec")
    result = bayes_bound(instance)
    zero, train_mean = baseline_losses(instance)
    # The 8-D shape is out of reach: about as bad as predicting 0.
    assert result.test_loss == pytest.approx(zero, rel=0.05)
    assert result.test_loss == pytest.approx(train_mean, rel=0.05)
    assert result.test_loss > 10 * result.noise_floor
    assert result.quality < 0
    assert not result.passes_at_zero
    assert result.max_accuracy_factor < 0


def test_result_fields_agree_with_scoring(tig_results):
    instance, result = tig_results[0]
    _, f, y = instance.split("test")
    assert result.quality == scoring.quality(result.test_loss, instance)
    assert result.noise_floor == pytest.approx(
        float(np.mean((y.astype(np.float64) - f) ** 2))
    )
    assert result.f_variance == pytest.approx(float(np.var(f.astype(np.float64))))
    assert (result.seed, result.profile, result.n_train) == ("0", "tig", 1000)
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()

    largest = math.floor(result.max_accuracy_factor)
    passing = scoring.Difficulty(accuracy_factor=largest)
    assert scoring.score(instance, result.test_loss, passing).passed
    failing = scoring.Difficulty(accuracy_factor=largest + 1)
    assert not scoring.score(instance, result.test_loss, failing).passed


# ---- bad input --------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    with pytest.raises(TypeError, match="expects an nnopt.data.Instance"):
        bayes_bound("0")  # type: ignore[arg-type]
    kernel = RbfKernel(0.5, 1.0)
    x = np.zeros((4, 1))
    with pytest.raises(ValueError, match="same number of columns"):
        gp_posterior_mean(
            x, np.zeros(4), np.zeros((2, 2)), kernel=kernel, noise_variance=1
        )
    with pytest.raises(ValueError, match=r"y_train must have shape \(4,\)"):
        gp_posterior_mean(x, np.zeros(5), x, kernel=kernel, noise_variance=1)
    with pytest.raises(ValueError, match="noise_variance must be a positive"):
        gp_posterior_mean(x, np.zeros(4), x, kernel=kernel, noise_variance=0.0)
    big = np.zeros((MAX_TRAIN_POINTS + 1, 1))
    with pytest.raises(ValueError, match="more than the exact solve handles"):
        gp_posterior_mean(big, big[:, 0], x, kernel=kernel, noise_variance=1)
    with pytest.raises(ValueError, match="kernel lengthscale must be a positive"):
        RbfKernel(0.0, 1.0)


# ---- command line -----------------------------------------------------------


def test_cli_json_parses_one_object_per_seed():
    result = runner.invoke(app, ["bound", "--seed", "0,1", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["seed"] for row in rows] == ["0", "1"]
    assert set(rows[0]) >= {"test_loss", "quality", "max_accuracy_factor"}
    assert rows[0]["test_loss"] == pytest.approx(
        bayes_bound(generate_instance("0", "tig")).test_loss
    )


def test_cli_table_with_derived_seeds():
    result = runner.invoke(
        app, ["bound", "--seeds", "2", "--seed-base", "b", "--set", "n_test=50"]
    )
    assert result.exit_code == 0, result.output
    for text in ("b-0", "b-1", "quality ceiling", "mean of 2"):
        assert text in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "0", "--seeds", "2"], "not both"),
        (["--seed", "0,,1"], "empty entry"),
        (["--set", "noise_std=-1"], "noise_std must be a positive"),
        (["--profile", "nope"], "unknown profile"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(args, message):
    result = runner.invoke(app, ["bound", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_bound_result_is_frozen(tig_results):
    _, result = tig_results[0]
    assert isinstance(result, BoundResult)
    with pytest.raises(AttributeError):
        result.test_loss = 0.0  # type: ignore[misc]

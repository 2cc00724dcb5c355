"""The Parzen-window log-likelihood against hand computations and scipy."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from lightning_genae.metrics.parzen import MNIST_SIGMAS, parzen_log_likelihood, select_bandwidth


def test_one_sample_is_a_gaussian_density():
    sample, point = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    sigma = 0.5
    expected = -1 / (2 * sigma**2) - 2 * math.log(sigma * math.sqrt(2 * math.pi))
    assert parzen_log_likelihood(sample, point, sigma).item() == pytest.approx(expected, abs=1e-12)


def test_many_samples_match_scipy_mixture():
    rng = np.random.default_rng(0)
    samples, points = rng.random((50, 6)), rng.random((13, 6))
    sigma = 0.3
    densities = np.stack(
        [multivariate_normal(mean=s, cov=sigma**2 * np.eye(6)).logpdf(points) for s in samples]
    )
    expected = logsumexp(densities, axis=0) - math.log(len(samples))
    got = parzen_log_likelihood(torch.tensor(samples), torch.tensor(points), sigma, batch=4)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-9)


def test_the_bandwidth_is_the_grid_value_with_the_best_validation_likelihood():
    torch.manual_seed(0)
    samples = torch.rand(200, 4) * 0.1
    validation = torch.rand(50, 4) * 0.1
    sigma, means = select_bandwidth(samples, validation, (0.001, 0.03, 3.0))
    assert sigma == max(means, key=means.get) == 0.03
    assert len(MNIST_SIGMAS) == 10 and MNIST_SIGMAS[0] == pytest.approx(0.1) and MNIST_SIGMAS[-1] == 1.0


# ----- bench/parzen_baselines.py: what bounds an autoencoder run's figure -----


BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(name: str):
    """A bench script as a module, with bench/ on the path as when it runs (for the scripts it imports)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    path = BENCH / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def printed_figures(text: str) -> dict[str, float]:
    """`  decoded prior draws   314.7 ± 1.7   0.167` -> {"decoded prior draws": 314.7}."""
    rows = [line.split("±")[0].rsplit(None, 1) for line in text.splitlines() if line.startswith("  ")]
    return {label.strip(): float(value) for label, value in rows}


def test_an_autoencoder_runs_decomposition_scores_its_prior_draws_as_the_reproduction_and_its_reconstructions(
    tmp_path, capsys
) -> None:
    from tiny import TINY_RUN

    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.experiment.cli import main

    run_dir = tmp_path / "aae"
    assert main(["--model", "aae", *TINY_RUN, "--max-steps", "3", "--output", str(run_dir)]) == 0
    datamodule = build_datamodule("digits", data_dir=str(tmp_path))
    datamodule.setup("fit")
    split = {
        name: datamodule.split_tensors(name)[0].float().flatten(1) / 255 for name in ("train", "val", "test")
    }
    baselines, reproduction = load_bench("parzen_baselines"), load_bench("reproduce_parzen")
    drawn = split["train"][:300]
    with pytest.raises(baselines.ConfigError, match="was trained on digits; the estimate is MNIST's"):
        baselines.load_run(run_dir)
    # Scored here on digits' own splits, which the script refuses: the decomposition's code is the same.
    checkpoint = baselines.RunCheckpoint.load(run_dir / "checkpoints" / "last.ckpt", "--runs")
    model = checkpoint.restore(baselines.MODELS["aae"].module, "--runs").eval()
    run = baselines.Run(run_dir, checkpoint.stored_config("--runs"), model, 3)
    capsys.readouterr()
    baselines.score_run(run, drawn, split)
    figures = printed_figures(capsys.readouterr().out)

    def figure(samples: torch.Tensor) -> float:
        sigma, _ = select_bandwidth(samples.flatten(1), split["val"])
        return round(parzen_log_likelihood(samples.flatten(1), split["test"], sigma).mean().item(), 1)

    samples = reproduction.samples_of(run_dir, "aae", 0, torch.device("cpu"))
    assert figures["decoded prior draws"] == figure(samples)
    with torch.no_grad():
        reconstructions = model.decode(model.encode(drawn.view(-1, 1, 16, 16) * 2 - 1))
    assert figures["reconstructions of the training images"] == figure((reconstructions.clamp(-1, 1) + 1) / 2)
    assert set(figures) == {
        "decoded prior draws",
        "reconstructions of the training images",
        "decoded draws of the codes' Gaussian",
    }

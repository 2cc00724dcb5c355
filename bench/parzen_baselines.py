"""Calibration: the MNIST Parzen-window log-likelihood of sample sets other than a model's prior draws.

The estimator (lightning_genae.metrics.parzen, the protocol of bench/reproduce_parzen.py: 10,000 samples
in [0, 1], the bandwidth chosen from the reference grid logspace(-1, 0, 10) on the 5,000-image validation
split, the mean over the 10,000 test images) applied to sample sets that place the papers' figures (the
GAN's 225, the AAE's 340) on the estimator's scale.

Without `--runs`, the two sets Theis, van den Oord and Bethge ("A note on the evaluation of generative
models", ICLR 2016, section 3.2) put beside the published models: 10,000 images of the training split
itself (samples of the true distribution) and the 10,000 centroids of k-means on the training split,
which score far higher than the true samples because the estimate rewards blurred prototypes near every
test image.

With `--runs RUN_DIR ...` (`--data mnist` run folders, or their checkpoints, of an autoencoder family:
aae, ae, vae, ...), three sample sets of each run's decoder: its decoded prior draws (the reproduction's
figure), its reconstructions of 10,000 training images (the samples it would give if its codes filled the
prior exactly as the training images' codes do) and its decoding of draws from a Gaussian with the codes'
mean and covariance (whether matching the codes' first two moments would be enough).

    python bench/parzen_baselines.py --data-dir DATA [--clusters 10000] [--kmeans-iterations 100]
    python bench/parzen_baselines.py --data-dir DATA --runs RUN_DIR [RUN_DIR ...]

k-means is scikit-learn's (Lloyd, k-means++ start, seed 0, one thread); it prints every iteration. The
training split is the framework's 55,000 images (the fixed 5,000-image validation carve-out held out), and
the 10,000 training images are a seeded draw of them, the same in both modes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from bench_runs import prepared
from reproduce_parzen import SAMPLES, in_unit_range, prior_samples
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.datamodules import build_datamodule
from lightning_genae.errors import ConfigError
from lightning_genae.metrics.parzen import parzen_log_likelihood, select_bandwidth
from lightning_genae.models import MODELS

CHUNK = 500
KMEANS_ITERATIONS = 100


def score(name: str, samples: torch.Tensor, split: dict[str, torch.Tensor]) -> None:
    """Print the Parzen log-likelihood of the test split under `samples` (flat pixels in [0, 1]), and the
    validation split's at the same bandwidth (the figure to choose settings by)."""
    sigma, validation = select_bandwidth(samples, split["val"])
    test = parzen_log_likelihood(samples, split["test"], sigma)
    se = test.std() / len(test) ** 0.5
    line = f"{name:46}{test.mean().item():>10.1f} ± {se.item():.1f}{sigma:>10.3f}{validation[sigma]:>12.1f}"
    print(line, flush=True)


def kmeans_centroids(train: torch.Tensor, clusters: int, iterations: int) -> torch.Tensor:
    started = time.time()
    print(f"k-means: {clusters} centroids on the {len(train)} training images, at most {iterations} "
          "iterations (one line each)", flush=True)  # fmt: skip
    kmeans = KMeans(clusters, n_init=1, max_iter=iterations, random_state=0, verbose=1)
    with threadpool_limits(1):
        kmeans.fit(train.numpy().astype(np.float32))
    print(
        f"k-means: {kmeans.n_iter_} iterations, inertia {kmeans.inertia_:.1f}, {time.time() - started:.0f} s"
    )
    return torch.from_numpy(kmeans.cluster_centers_).float()


@torch.no_grad()
def in_chunks(function: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    return torch.cat([function(inputs[start : start + CHUNK]) for start in range(0, len(inputs), CHUNK)])


def as_samples(images: torch.Tensor) -> torch.Tensor:
    """Model-range images [-1, 1] -> flat pixels in [0, 1], as the reproduction scores them."""
    return in_unit_range(images).flatten(1)


class Run(NamedTuple):
    """An autoencoder run to decompose: where it is, its stored configuration and its restored model."""

    path: Path
    config: dict[str, Any]
    model: torch.nn.Module
    iteration: int


def load_run(path: Path) -> Run:
    """A run folder (or one of its checkpoints) as a `Run`; a run this script cannot decompose is refused
    with one line naming why, before any data is loaded."""
    checkpoint_path = path if path.suffix == ".ckpt" else path / "checkpoints" / "last.ckpt"
    checkpoint = RunCheckpoint.load(checkpoint_path, "--runs")
    config = checkpoint.stored_config("--runs")
    family, data = config["model"], config["data"]
    if data != "mnist":
        raise ConfigError(
            f"--runs: {path} was trained on {data}; the estimate is MNIST's: give --data mnist runs"
        )
    model = checkpoint.restore(MODELS[family].module, "--runs").eval()
    if not (hasattr(model, "encode") and hasattr(model, "decode")):
        raise ConfigError(f"--runs: {path} is a {family} run, which has no encoder; give autoencoder runs")
    return Run(path, config, model, checkpoint.iteration(model.optimizer_steps_per_iteration))


@torch.no_grad()
def score_run(run: Run, drawn_training_images: torch.Tensor, split: dict[str, torch.Tensor]) -> None:
    model = run.model
    print(f"{run.path} ({run.config['model']}, iteration {run.iteration})")
    # bench/reproduce_parzen.py's own draws (seeded with the run's seed): this line repeats its figure.
    score("  decoded prior draws", prior_samples(model, run.config["seed"]).flatten(1), split)
    codes = in_chunks(model.encode, drawn_training_images.view(-1, *model.image_shape) * 2 - 1)
    score("  reconstructions of the training images", as_samples(in_chunks(model.decode, codes)), split)
    covariance = torch.cov(codes.T)
    if torch.linalg.cholesky_ex(covariance).info:
        # An encoder the adversarial phase has collapsed gives (nearly) the same code for every image.
        label = "  decoded draws of the codes' Gaussian"
        print(f"{label:46}{'-':>16}   (the codes' covariance is singular)")
        return
    fitted = torch.distributions.MultivariateNormal(codes.mean(0), covariance)
    torch.manual_seed(0)
    draws = fitted.sample((SAMPLES,))
    score("  decoded draws of the codes' Gaussian", as_samples(in_chunks(model.decode, draws)), split)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--clusters", type=int, default=SAMPLES, help="k-means centroids (the samples)")
    parser.add_argument(
        "--kmeans-iterations", type=int, default=KMEANS_ITERATIONS, help="the most Lloyd iterations"
    )
    parser.add_argument(
        "--runs", type=Path, nargs="+", help="autoencoder run folders (or checkpoints) to decompose"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.runs and (args.clusters != SAMPLES or args.kmeans_iterations != KMEANS_ITERATIONS):
        parser.error("--clusters and --kmeans-iterations shape the k-means baseline, which --runs leaves out")
    if args.clusters < 1 or args.kmeans_iterations < 1:
        parser.error("--clusters and --kmeans-iterations must be positive")
    try:
        runs = [load_run(path) for path in args.runs or []]
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    datamodule = build_datamodule("mnist", data_dir=args.data_dir)
    prepared(parser, datamodule)
    split = {
        name: datamodule.split_tensors(name)[0].float().flatten(1) / 255 for name in ("train", "val", "test")
    }
    train = split["train"]
    drawn = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:SAMPLES]]
    print(f"training split {len(train)} images, validation {len(split['val'])}, test {len(split['test'])}")
    if args.clusters > len(train):
        parser.error(f"--clusters {args.clusters}: the training split has {len(train)} images")
    print(f"{'samples':46}{'test LL (nats) ± se':>16}{'sigma':>10}{'val LL':>12}", flush=True)
    if runs:
        for run in runs:
            score_run(run, drawn, split)
        return
    score(f"{SAMPLES} training images", drawn, split)
    score(
        f"{args.clusters} k-means centroids",
        kmeans_centroids(train, args.clusters, args.kmeans_iterations),
        split,
    )


if __name__ == "__main__":
    main()

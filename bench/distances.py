"""Benchmark: the feature-space metrics against torch-fidelity's and torchmetrics' on the same features.

For every metric, each implementation's value, its relative difference from the hand-written one, and its
median CPU time over `--repeats` runs taken in turns (after one warm-up run of each on the first case). CPU
time, because other work on a shared machine stretches wall-clock time unevenly; with one thread
(OMP_NUM_THREADS=1) it is about the wall-clock time on an idle machine. The features are float32 like a
backbone's: correlated, rectified (as Inception's pooled features are), real and generated drawn from
slightly different distributions. The `dup` case makes half of the generated rows copies of real rows,
shuffled, so that k-NN distances tie exactly with radii. The docstring of lightning_genae/metrics/distances.py
quotes this table for each library it uses and each metric it keeps.

    OMP_NUM_THREADS=1 python bench/distances.py
    OMP_NUM_THREADS=1 python bench/distances.py --cases 2000x2048 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import scipy.linalg
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import poly_mmd

from lightning_genae.metrics import distances

KID_SUBSETS = 100
Values = tuple[float, ...]


def features(n: int, d: int, seed: int, scale: float, shift: float) -> torch.Tensor:
    """n rectified correlated Gaussian features in float32, one fixed mixing matrix per dimension d."""
    mix = torch.randn(d, d, generator=torch.Generator().manual_seed(d)) / d**0.5
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return torch.relu(z @ (scale * mix) + shift)


def case(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and generated features for a case named `<n>x<d>` or `<n>x<d>-dup`."""
    size, _, dup = name.partition("-")
    n, d = (int(part) for part in size.split("x"))
    real = features(n, d, seed=1, scale=1.0, shift=0.3)
    fake = features(n, d, seed=2, scale=1.05, shift=0.32)
    if dup:
        copies = real[torch.randperm(n, generator=torch.Generator().manual_seed(3))[: n // 2]]
        fake = torch.cat([copies, fake[n // 2 :]])
    return real, fake


# --- hand-written Fréchet distance (kept here as the comparison for the library route the module uses)


def fd_eigh(real: torch.Tensor, fake: torch.Tensor) -> Values:
    """FD with Tr((S1 S2)^(1/2)) from symmetric eigendecompositions: sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))."""
    x, y = real.double(), fake.double()
    mu1, mu2, s1, s2 = x.mean(0).numpy(), y.mean(0).numpy(), torch.cov(x.T).numpy(), torch.cov(y.T).numpy()
    w, v = scipy.linalg.eigh(s1, driver="evd")
    a = v * np.sqrt(np.clip(w, 0.0, None))
    m = a.T @ s2 @ a
    tr_covmean = np.sqrt(np.clip(scipy.linalg.eigh((m + m.T) / 2, eigvals_only=True), 0.0, None)).sum()
    return (float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean),)


def fd_torch_fidelity(real: torch.Tensor, fake: torch.Tensor) -> Values:
    stats = [fid_features_to_statistics(x.double()) for x in (real, fake)]
    return (fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"],)


class _Identity(torch.nn.Module):
    """torchmetrics' FID given features: its 'feature extractor' returns its input."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fd_torchmetrics(real: torch.Tensor, fake: torch.Tensor) -> Values:
    metric = FrechetInceptionDistance(feature=_Identity(real.shape[1])).set_dtype(torch.float64)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return (float(metric.compute()),)


# --- KID: 100 subsets of 1,000, seed 0; torch-fidelity draws the same subsets as the module


def kid_module(real: torch.Tensor, fake: torch.Tensor) -> Values:
    return distances.kernel_inception_distance(real, fake, subset_size=1000, num_subsets=KID_SUBSETS)


def kid_torch_fidelity(real: torch.Tensor, fake: torch.Tensor, dtype: torch.dtype) -> Values:
    settings = {"kid_subsets": KID_SUBSETS, "kid_subset_size": 1000, "rng_seed": 0, "verbose": False}
    out = kid_features_to_metric(real.to(dtype), fake.to(dtype), **settings)
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]


def kid_torchmetrics_poly_mmd(real: torch.Tensor, fake: torch.Tensor) -> Values:
    """torchmetrics' poly_mmd on the module's subsets (its KernelInceptionDistance draws with torch's global
    generator, so its subsets, and its number, differ by sampling)."""
    x, y = real.double(), fake.double()
    rng = np.random.RandomState(0)
    mmds = []
    for _ in range(KID_SUBSETS):
        r, f = rng.choice(len(x), 1000, replace=False), rng.choice(len(y), 1000, replace=False)
        mmds.append(float(poly_mmd(x[r], y[f])))
    return float(np.mean(mmds)), float(np.std(mmds))


# --- precision/recall (k=3); torch-fidelity takes the generated features first


def pr_torch_fidelity(real: torch.Tensor, fake: torch.Tensor, dtype: torch.dtype) -> Values:
    settings = {"prc_neighborhood": 3, "prc_batch_size": 10000, "save_cpu_ram": False, "verbose": False}
    out = prc_features_to_metric(fake.to(dtype), real.to(dtype), **settings)
    return out["precision"], out["recall"]


def all_with_torch_fidelity_pr(real: torch.Tensor, fake: torch.Tensor) -> Values:
    """The seven metrics as the module computes them, but precision/recall from torch-fidelity in float32 (its
    fastest route), so density/coverage no longer share their k-NN distances with precision/recall."""
    fd_torch_fidelity(real, fake)
    kid_module(real, fake)
    pr_torch_fidelity(real, fake, torch.float32)
    distances.density_coverage(real, fake)
    return ()


IMPLEMENTATIONS: dict[str, list[tuple[str, Callable[[torch.Tensor, torch.Tensor], Values]]]] = {
    "fd": [
        ("eigh (hand-written)", fd_eigh),
        ("module", lambda r, f: (distances.frechet_distance(r, f),)),
        ("torch-fidelity float64", fd_torch_fidelity),
        ("torchmetrics FID float64", fd_torchmetrics),
    ],
    "kid, kid_std": [
        ("module", kid_module),
        ("torch-fidelity float64", lambda r, f: kid_torch_fidelity(r, f, torch.float64)),
        ("torch-fidelity float32", lambda r, f: kid_torch_fidelity(r, f, torch.float32)),
        ("torchmetrics poly_mmd float64", kid_torchmetrics_poly_mmd),
    ],
    "precision, recall": [
        ("module", lambda r, f: distances.precision_recall(r, f)),
        ("torch-fidelity float64", lambda r, f: pr_torch_fidelity(r, f, torch.float64)),
        ("torch-fidelity float32", lambda r, f: pr_torch_fidelity(r, f, torch.float32)),
    ],
    "density, coverage": [("module (no library has them)", lambda r, f: distances.density_coverage(r, f))],
    "all seven": [
        ("module feature_metrics", lambda r, f: distances.feature_metrics(r, f) and ()),
        ("same, p/r torch-fidelity f32", all_with_torch_fidelity_pr),
    ],
}


def compare(
    implementations: list[tuple[str, Callable[[torch.Tensor, torch.Tensor], Values]]],
    real: torch.Tensor,
    fake: torch.Tensor,
    repeats: int,
) -> list[tuple[Values, float]]:
    """Each implementation's value (its last run) and median CPU time, the runs taken in turns (one of each,
    then again) so that a change in the machine's load falls on all of them alike."""
    values: list[Values] = [()] * len(implementations)
    times: list[list[float]] = [[] for _ in implementations]
    for _ in range(repeats):
        for index, (_, fn) in enumerate(implementations):
            start = time.process_time()
            values[index] = fn(real, fake)
            times[index].append(time.process_time() - start)
    return [(value, statistics.median(runs)) for value, runs in zip(values, times, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default="2000x64,2000x64-dup,10000x128,10000x2048")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__} "
        f"threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"median of {args.repeats} runs"
    )
    print(f"{'case':<12} {'metric':<18} {'implementation':<30} {'value':<38} {'rel.diff':>8} {'CPU s':>8}")
    for index, name in enumerate(args.cases.split(",")):
        real, fake = case(name)
        for metric, implementations in IMPLEMENTATIONS.items():
            if index == 0:
                compare(implementations, real, fake, 1)  # warm-up: imports, first-call allocations
            results = compare(implementations, real, fake, args.repeats)
            reference = results[0][0]
            for (label, _), (value, seconds) in zip(implementations, results, strict=True):
                diff = max(
                    (abs(v - r) / abs(r) if r else abs(v) for v, r in zip(value, reference, strict=True)),
                    default=0.0,
                )
                shown = ", ".join(f"{v:.10g}" for v in value)
                print(f"{name:<12} {metric:<18} {label:<30} {shown:<38} {diff:>8.1e} {seconds:>8.3f}")


if __name__ == "__main__":
    main()

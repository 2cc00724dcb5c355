"""Generative-model metrics from feature matrices `real` [N_r, D] and `fake` [N_f, D]: FD, KID,
precision/recall, density/coverage, in float64 as the published references define them: FD and KID as
torch-fidelity's (a seed draws KID's subsets), precision/recall Kynkäänniemi et al.'s k-NN balls with `<=`,
density/coverage Naeem et al.'s with `<`. KID and the k-NN metrics are computed here, several times faster
than torch-fidelity's and torchmetrics' at 10,000 x 128 features (bench/distances.py)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

# Largest pairwise-distance block held at once (elements; float64 -> 128 MiB). Read at call time, so tests
# can shrink it to check that chunking leaves the results unchanged.
_CHUNK_ELEMENTS = 2**24

_KID_DEFAULT_SUBSET = 1000
# k of precision/recall (Kynkäänniemi et al. 2019) and of density/coverage (Naeem et al. 2020); a k-NN
# radius excludes the sample itself, so every set needs more than k samples.
PRECISION_RECALL_K = 3
DENSITY_COVERAGE_K = 5
MIN_FEATURE_SAMPLES = max(PRECISION_RECALL_K, DENSITY_COVERAGE_K) + 1


def _checked(real: Tensor, fake: Tensor, what: str, min_real: int, min_fake: int) -> tuple[Tensor, Tensor]:
    """Both sets detached as float64 on ``real``'s device; ValueError for NaN or Inf, or too few samples."""
    checked = []
    for x, who, minimum in ((real, "real", min_real), (fake, "fake", min_fake)):
        x = x.detach().to(torch.float64)
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).any(dim=1).sum())
            raise ValueError(f"{who} features contain NaN or Inf in {bad} of {len(x)} rows")
        if len(x) < minimum:
            need = f"need at least {minimum} samples per set"
            raise ValueError(f"{what} {need}, got {len(x)} {who}; give at least {minimum} (eval_samples)")
        checked.append(x.to(real.device))
    return checked[0], checked[1]


def _frechet_distance(real: Tensor, fake: Tensor) -> float:
    """torch-fidelity's FD of validated float64 features (on the CPU, where its NumPy code runs)."""
    # Imported here: torch-fidelity imports torchvision's models, and config reads MIN_FEATURE_SAMPLES from
    # this module, so the command line would wait for them.
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    stats = [fid_features_to_statistics(x.cpu()) for x in (real, fake)]
    return float(fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"])


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to real and fake features (FID with Inception features)."""
    return _frechet_distance(*_checked(real, fake, "FD's covariances", 2, 2))


def _poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    """Cubic polynomial kernel matrix (a.b / D + 1)^3, fused into one buffer (it dominates KID's time)."""
    one = torch.ones((), dtype=a.dtype, device=a.device)
    return torch.addmm(one, a, b.T, alpha=1.0 / a.shape[1]).pow_(3)


def _poly_mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 of two equal-size sets with the cubic kernel, as torch-fidelity's `mmd2`: the within-set
    sums drop the diagonal, the cross term keeps it."""
    m = x.shape[0]
    k_xx, k_yy = _poly_kernel(x, x), _poly_kernel(y, y)
    within = k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()
    return float(within / (m * (m - 1)) - 2.0 * _poly_kernel(x, y).sum() / (m * m))


def _kid(
    real: Tensor, fake: Tensor, subset_size: int | None, num_subsets: int, seed: int
) -> tuple[float, float]:
    n_r, n_f = real.shape[0], fake.shape[0]
    # Subsets of at most half the smaller set: with subsets as large as the set itself every draw is the
    # same and kid_std would be 0 whatever the data. From 2,000 samples on this is the usual 1,000.
    m = min(_KID_DEFAULT_SUBSET, min(n_r, n_f) // 2) if subset_size is None else int(subset_size)
    # The unbiased estimator divides by m (m - 1), and a subset cannot hold more samples than its set.
    if not 2 <= m <= min(n_r, n_f):
        raise ValueError(
            f"KID needs a subset size from 2 to the smaller sample count, got {m} (from {n_r} real, {n_f} "
            f"fake); give a subset size <= {min(n_r, n_f)}, or at least 4 samples (eval_samples)"
        )
    # RandomState.choice(replace=False) is what torch-fidelity draws with, so a given seed selects the same
    # subsets there, and RandomState's stream is frozen across NumPy versions.
    rng = np.random.RandomState(seed)
    mmds = np.empty(num_subsets)
    for i in range(num_subsets):
        idx_r = torch.from_numpy(rng.choice(n_r, m, replace=False)).to(real.device)
        idx_f = torch.from_numpy(rng.choice(n_f, m, replace=False)).to(real.device)
        mmds[i] = _poly_mmd2_unbiased(real[idx_r], fake[idx_f])
    return float(mmds.mean()), float(mmds.std())  # population std, as torch-fidelity and torchmetrics


def kernel_inception_distance(
    real: Tensor, fake: Tensor, subset_size: int | None = None, num_subsets: int = 100, seed: int = 0
) -> tuple[float, float]:
    """KID (mean, std) over ``num_subsets`` random subsets of ``subset_size`` (default min(1000, N // 2), N
    the smaller set); ``real`` first, as torch-fidelity's ``features_1`` (see the module's docstring)."""
    return _kid(*_checked(real, fake, "KID's subsets", 0, 0), subset_size, num_subsets, seed)


# --- k-NN manifold metrics: squared distances ||a||^2 + ||b||^2 - 2 a.b in float64, on features shifted by
# the rounded real mean (integer features keep exact distances); a distance and a radius within the formula's
# rounding bound (`_tie_tolerance`) are equal, as one distance may round differently in two passes.


def _row_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Row slices such that a block of [rows, n_cols] distances stays within ``_CHUNK_ELEMENTS``."""
    step = max(1, _CHUNK_ELEMENTS // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _sq_dists(a: Tensor, a_sq: Tensor, b: Tensor, b_sq: Tensor) -> Tensor:
    """Squared distances [len(a), len(b)] from precomputed squared norms, built in one buffer."""
    return torch.addmm(b_sq[None, :], a, b.T, alpha=-2.0).add_(a_sq[:, None]).clamp_(min=0.0)


def _tie_tolerance(a_sq: Tensor, b_sq: Tensor, dims: int) -> Tensor:
    """Per pair, a bound on the float64 rounding of ||a||^2 + ||b||^2 - 2 a.b over `dims` features: per pair,
    not from the largest norms, so one far-off sample leaves every other comparison exact."""
    return (8.0 * (dims + 2) * float(np.finfo(np.float64).eps)) * (a_sq[:, None] + b_sq[None, :])


def _knn_sq_radii(x: Tensor, k_max: int) -> Tensor:
    """Sorted squared distances [N, k_max] from each row to its k_max nearest OTHER rows."""
    sq = (x * x).sum(dim=1)
    out = torch.empty(x.shape[0], k_max, dtype=x.dtype, device=x.device)
    for rows in _row_blocks(x.shape[0], x.shape[0]):
        d2 = _sq_dists(x[rows], sq[rows], x, sq)
        own = torch.arange(rows.start, rows.stop, device=x.device)
        d2[own - rows.start, own] = float("inf")  # exclude the sample itself by index, not by its ~0 distance
        out[rows] = torch.topk(d2, k_max, dim=1, largest=False, sorted=True).values
    return out


def _manifold_metrics(
    real: Tensor,
    fake: Tensor,
    *,
    real_r2_pr: Tensor | None = None,
    fake_r2_pr: Tensor | None = None,
    real_r2_dc: Tensor | None = None,
    dc_k: int = 0,
) -> dict[str, float]:
    """Precision/recall and/or density/coverage from one blockwise pass over real-fake distances."""
    n_r, n_f = real.shape[0], fake.shape[0]
    r_sq, f_sq = (real * real).sum(dim=1), (fake * fake).sum(dim=1)
    fake_in_real = torch.zeros(n_f, dtype=torch.bool, device=real.device)
    real_in_fake = torch.zeros(n_r, dtype=torch.bool, device=real.device)
    inside_count = torch.zeros((), dtype=torch.int64, device=real.device)
    covered = torch.zeros((), dtype=torch.int64, device=real.device)
    for rows in _row_blocks(n_r, n_f):
        # Ties within rounding are ties: inside the inclusive balls, outside the strict ones. The distances
        # less and plus the tolerance, in the two buffers of a block (d2 - tie <= r2 is d2 <= r2 + tie).
        low = _sq_dists(real[rows], r_sq[rows], fake, f_sq)
        high = _tie_tolerance(r_sq[rows], f_sq, real.shape[1])
        low.sub_(high)
        high.mul_(2.0).add_(low)
        if real_r2_pr is not None:
            fake_in_real |= (low <= real_r2_pr[rows, None]).any(dim=0)
        if fake_r2_pr is not None:
            real_in_fake[rows] = (low <= fake_r2_pr[None, :]).any(dim=1)
        if real_r2_dc is not None:
            inside = high < real_r2_dc[rows, None]
            inside_count += torch.count_nonzero(inside)  # several times faster than bool .sum()
            covered += torch.count_nonzero(inside.any(dim=1))  # nearest fake within this real sample's radius
    out: dict[str, float] = {}
    if real_r2_pr is not None:
        out["precision"] = float(fake_in_real.double().mean())
    if fake_r2_pr is not None:
        out["recall"] = float(real_in_fake.double().mean())
    if real_r2_dc is not None:
        out["density"] = float(inside_count) / (dc_k * n_f)
        out["coverage"] = float(covered) / n_r
    return out


def _centred(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Shift both sets by the real mean, rounded to integers, so that squared norms (and their
    cancellation) stay small while integer features stay integers and their distances exact."""
    centre = real.mean(dim=0).round()
    return real - centre, fake - centre


def precision_recall(real: Tensor, fake: Tensor, k: int = PRECISION_RECALL_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN hyperspheres, Euclidean."""
    real, fake = _centred(*_checked(real, fake, f"precision/recall (k={k})", k + 1, k + 1))
    out = _manifold_metrics(
        real, fake, real_r2_pr=_knn_sq_radii(real, k)[:, k - 1], fake_r2_pr=_knn_sq_radii(fake, k)[:, k - 1]
    )
    return out["precision"], out["recall"]


def density_coverage(real: Tensor, fake: Tensor, k: int = DENSITY_COVERAGE_K) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) with balls of each real sample's k-NN radius."""
    real, fake = _centred(*_checked(real, fake, f"density/coverage (k={k})", k + 1, 0))
    out = _manifold_metrics(real, fake, real_r2_dc=_knn_sq_radii(real, k)[:, k - 1], dc_k=k)
    return out["density"], out["coverage"]


def feature_metrics(
    real: Tensor,
    fake: Tensor,
    *,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """All metrics at once: fd, kid, kid_std, precision, recall, density, coverage, n_real, n_fake; the real
    k-NN radii are computed once for both k, and one real-fake distance pass serves all four k-NN metrics."""
    pr_k, dc_k = PRECISION_RECALL_K, DENSITY_COVERAGE_K
    # With k >= 1 these also give FD its 2 samples per set.
    what = f"precision/recall (k={pr_k}) and density/coverage (k={dc_k})"
    real, fake = _checked(real, fake, what, max(pr_k, dc_k) + 1, pr_k + 1)
    n_r, n_f = real.shape[0], fake.shape[0]
    fd = _frechet_distance(real, fake)
    kid, kid_std = _kid(real, fake, kid_subset_size, kid_subsets, seed)

    real_c, fake_c = _centred(real, fake)
    real_knn = _knn_sq_radii(real_c, max(pr_k, dc_k))
    manifold = _manifold_metrics(
        real_c,
        fake_c,
        real_r2_pr=real_knn[:, pr_k - 1],
        fake_r2_pr=_knn_sq_radii(fake_c, pr_k)[:, pr_k - 1],
        real_r2_dc=real_knn[:, dc_k - 1],
        dc_k=dc_k,
    )
    return {
        "fd": fd,
        "kid": kid,
        "kid_std": kid_std,
        **manifold,
        "n_real": float(n_r),
        "n_fake": float(n_f),
    }

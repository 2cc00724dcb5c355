"""Generative-model metrics from feature matrices: FD, KID, precision/recall, density/coverage.

Every function takes ``real`` [N_r, D] and ``fake`` [N_f, D] features (any float dtype, on any device; work
happens on ``real``'s device in float64) and returns plain Python floats. The definitions follow the
published reference implementations, because these are the numbers people compare across papers:

- FD: pytorch-fid / torch-fidelity, ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).
- KID: Bińkowski et al. 2018 as in torch-fidelity: unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3, averaged
  over random subsets. Each subset draws its real rows first, then its fake rows, so for the same seed the
  subsets are torch-fidelity's when `kid_features_to_metric(features_1, features_2)` gets the real features
  as `features_1`; called with the generated features first, torch-fidelity draws other subsets (the mean
  estimates the same MMD^2, the number differs by sampling).
- Precision/recall: Kynkäänniemi et al. 2019 (NVlabs code, torch-fidelity): k-NN balls, ``<=``.
- Density/coverage: Naeem et al. 2020 (clovaai/generative-evaluation-prdc): k-NN balls, strict ``<``.

The two inequalities differ only on exact ties (duplicated samples); each follows its own reference.

Over 400 lines for one job: the distances between two feature sets, each metric beside the
reference it follows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "density_coverage",
    "feature_metrics",
    "frechet_distance",
    "frechet_distance_from_stats",
    "gaussian_stats",
    "kernel_inception_distance",
    "precision_recall",
]

# Largest pairwise-distance block held at once (elements; float64 -> 128 MiB). Read at call time, so tests
# can shrink it to check that chunking leaves the results unchanged.
_CHUNK_ELEMENTS = 2**24

# Negative eigenvalues below this fraction of the largest one are round-off; larger ones mean the inputs
# are not covariance matrices (the analogue of pytorch-fid's "imaginary component" check).
_PSD_RTOL = 1e-4

_KID_DEFAULT_SUBSET = 1000
# k of precision/recall (Kynkäänniemi et al. 2019) and of density/coverage (Naeem et al. 2020); a k-NN
# radius excludes the sample itself, so every set needs more than k samples.
PRECISION_RECALL_K = 3
DENSITY_COVERAGE_K = 5
MIN_FEATURE_SAMPLES = max(PRECISION_RECALL_K, DENSITY_COVERAGE_K) + 1


# --- validation


def _check_features(x: Tensor, name: str) -> Tensor:
    """Return ``x`` detached as float64 after checking it is a finite, non-empty [N, D] matrix."""
    if x.dim() != 2:
        raise ValueError(
            f"{name} features must be 2-D [N, D], got shape {tuple(x.shape)}; flatten them with x.flatten(1)"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} features are empty (shape {tuple(x.shape)}); pass at least one sample")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} features must be real numbers, got dtype {x.dtype}")
    x = x.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise ValueError(
            f"{name} features contain NaN or Inf in {bad} of {x.shape[0]} rows; "
            "check the model outputs (a diverged model) or the feature extractor"
        )
    return x


def _check_pair(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Validate both feature matrices and return them as float64 on ``real``'s device."""
    real = _check_features(real, "real")
    fake = _check_features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real and fake features differ in dimension ({real.shape[1]} vs {fake.shape[1]}); "
            "extract both with the same feature network and layer"
        )
    return real, fake.to(real.device)


def _check_neighbours(n: int, k: int, who: str, what: str) -> None:
    """Raise if a set is too small for k-nearest-neighbour radii that exclude the sample itself."""
    if k < 1:
        raise ValueError(f"{what} need k >= 1 nearest neighbours, got k={k}")
    if n <= k:
        raise ValueError(
            f"{what} need more than k={k} samples per set, got {n} {who}; give at least {k + 1} "
            "(eval_samples)"
        )


# --- Fréchet distance


def gaussian_stats(features: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of [N, D] features: the cacheable statistics for FD."""
    x = _check_features(features, "input")
    if x.shape[0] < 2:
        raise ValueError("a covariance needs at least 2 samples, got 1; give at least 2 (eval_samples)")
    mu = x.mean(dim=0)
    xc = x - mu
    sigma = (xc.T @ xc) / (x.shape[0] - 1)
    return mu.cpu().numpy(), sigma.cpu().numpy()


def _check_stats(mu: np.ndarray, sigma: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return float64 (mu [D], sigma [D, D]) after checking shapes, finiteness and symmetry."""
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    d = mu.shape[0]
    if mu.ndim != 1 or sigma.shape != (d, d):
        raise ValueError(
            f"{name} statistics must be mu [D] and sigma [D, D], got {mu.shape} and {sigma.shape}; "
            "compute them with gaussian_stats(features)"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{name} statistics contain NaN or Inf; recompute them from finite features")
    scale = np.abs(sigma).max()
    if np.abs(sigma - sigma.T).max() > 1e-6 * scale:
        raise ValueError(f"{name} covariance is not symmetric; pass the covariance from gaussian_stats")
    return mu, (sigma + sigma.T) / 2


def _check_psd_eigenvalues(w: np.ndarray, what: str) -> np.ndarray:
    """Clip round-off negatives to 0; raise if an eigenvalue is clearly negative (not a covariance)."""
    top = float(np.abs(w).max()) if w.size else 0.0
    if w.size and w.min() < -_PSD_RTOL * top:
        raise ValueError(
            f"{what} has eigenvalue {w.min():.3g} (largest {top:.3g}), so the inputs are not covariance "
            "matrices (symmetric positive semi-definite); pass covariances from gaussian_stats"
        )
    return np.clip(w, 0.0, None)


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) via symmetric eigendecompositions.

    S1 S2 is similar to the symmetric PSD matrix S1^(1/2) S2 S1^(1/2), whose eigenvalues are real and
    non-negative, so the trace is the sum of their square roots. Unlike ``scipy.linalg.sqrtm`` this needs no
    eps offset for singular products (N < D) and runs in about two seconds instead of ~15 for D = 2048.
    """
    # Imported here: config reads MIN_FEATURE_SAMPLES from this module, and the command line (which reads
    # config) need not wait for scipy.
    import scipy.linalg

    w, v = scipy.linalg.eigh(sigma1, driver="evd")  # divide and conquer: the fastest LAPACK driver here
    a = v * np.sqrt(_check_psd_eigenvalues(w, "sigma1"))  # S1^(1/2) = a v^T
    # a^T S2 a = v^T (S1^(1/2) S2 S1^(1/2)) v has the same eigenvalues and saves one D^3 product.
    m = a.T @ sigma2 @ a
    lam = scipy.linalg.eigh((m + m.T) / 2, eigvals_only=True)
    return float(np.sqrt(_check_psd_eigenvalues(lam, "S1^(1/2) S2 S1^(1/2)")).sum())


def frechet_distance_from_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians."""
    mu1, sigma1 = _check_stats(mu1, sigma1, "first")
    mu2, sigma2 = _check_stats(mu2, sigma2, "second")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"the two sets of statistics differ in dimension ({mu1.shape[0]} vs {mu2.shape[0]}); "
            "compute both with the same feature network and layer"
        )
    diff = mu1 - mu2
    tr_covmean = _trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to real and fake features (FID with Inception features)."""
    real, fake = _check_pair(real, fake)
    return frechet_distance_from_stats(*gaussian_stats(real), *gaussian_stats(fake))


# --- KID


def _poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    """Cubic polynomial kernel matrix (a.b / D + 1)^3, fused into one buffer (it dominates KID's time)."""
    one = torch.ones((), dtype=a.dtype, device=a.device)
    return torch.addmm(one, a, b.T, alpha=1.0 / a.shape[1]).pow_(3)


def _poly_mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 of two equal-size sets with the cubic kernel, as torch-fidelity's ``mmd2``.

    The within-set sums drop the diagonal, the cross term keeps it (Bińkowski et al.'s default estimator).
    """
    m = x.shape[0]
    k_xx, k_yy = _poly_kernel(x, x), _poly_kernel(y, y)
    within = k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()
    return float(within / (m * (m - 1)) - 2.0 * _poly_kernel(x, y).sum() / (m * m))


def _kid(
    real: Tensor, fake: Tensor, subset_size: int | None, num_subsets: int, seed: int
) -> tuple[float, float]:
    """KID on already validated float64 features."""
    n_r, n_f = real.shape[0], fake.shape[0]
    # Subsets of at most half the smaller set: with subsets as large as the set itself every draw is the
    # same and kid_std would be 0 whatever the data. From 2,000 samples on this is the usual 1,000.
    m = min(_KID_DEFAULT_SUBSET, min(n_r, n_f) // 2) if subset_size is None else int(subset_size)
    if m < 2:
        raise ValueError(
            f"KID needs subsets of at least 2 samples, got {m} (from {n_r} real, {n_f} fake); "
            "give at least 4 (eval_samples)"
        )
    if m > min(n_r, n_f):
        raise ValueError(
            f"KID subset size {m} exceeds the sample count ({n_r} real, {n_f} fake); "
            f"use a subset size <= {min(n_r, n_f)} or more samples"
        )
    if num_subsets < 1:
        raise ValueError(f"KID needs num_subsets >= 1, got {num_subsets}")
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
    """KID (mean, std) over ``num_subsets`` random subsets of ``subset_size``.

    The default subset size is min(1000, N // 2), N being the smaller set. ``real`` comes first: each
    subset's real rows are drawn before its fake rows, which is what makes a seed draw torch-fidelity's
    subsets when its ``features_1`` are the real features (swapping the arguments draws other subsets).

    Raises ValueError when the subset size is below 2 or above either sample count.
    """
    real, fake = _check_pair(real, fake)
    return _kid(real, fake, subset_size, num_subsets, seed)


# --- k-NN manifold metrics
#
# Squared Euclidean distances come from ||a||^2 + ||b||^2 - 2 a.b in float64 on features shifted by the real
# mean rounded to integers (distances are shift-invariant; the shift removes the cancellation a large common
# offset would cause), clamped at 0. One BLAS product per block keeps this fast; float64 makes the rounding
# (~1e-16 relative) far below any real gap between a distance and a radius. Radii stay squared: the
# comparisons are the same.
#
# Exact ties (duplicated samples) are the exception: a distance equal to a radius must compare equal, and
# two expressions for the same distance rounded differently break that tie either way. Integer features
# (pixel values, counts) have exact integer distances in float64, and an integer shift keeps them integers;
# a shift by the unrounded mean made them fractions, and density/coverage on such data drifted from the
# reference (clovaai's prdc) by up to 0.2 (tests/test_distances.py has the case). Other features (a
# classifier's, Inception's) tie when samples repeat (a model that reproduces its training images, a real
# folder scored against itself): the same pair's distance comes out of the radii's pass and of the
# real-fake pass rounded differently, by its position in a BLAS block, so a distance and a radius within
# the rounding bound of the formula (`_tie_tolerance`) are taken as equal. A real gap that small (about
# 1e-12 of the squared norms) does not occur between features of different images.


def _row_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Row slices such that a block of [rows, n_cols] distances stays within ``_CHUNK_ELEMENTS``."""
    step = max(1, _CHUNK_ELEMENTS // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _sq_dists(a: Tensor, a_sq: Tensor, b: Tensor, b_sq: Tensor) -> Tensor:
    """Squared distances [len(a), len(b)] from precomputed squared norms, built in one buffer."""
    return torch.addmm(b_sq[None, :], a, b.T, alpha=-2.0).add_(a_sq[:, None]).clamp_(min=0.0)


def _tie_tolerance(a_sq: Tensor, b_sq: Tensor, dims: int) -> Tensor:
    """Per pair [len(a), len(b)], a bound on the rounding of ||a||^2 + ||b||^2 - 2 a.b in float64 over `dims`
    features (squared norms `a_sq`, `b_sq`): two roundings of one distance differ by less. Per pair, not
    from the largest norms, so that one far-off sample leaves every other pair's comparison exact."""
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
    """Precision/recall and/or density/coverage from one blockwise pass over real-fake distances.

    Rows are real samples and columns fake ones, so a row holds everything coverage and recall need, while
    precision (any real ball per fake) and density (a count) accumulate across row blocks.
    """
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
    real, fake = _check_pair(real, fake)
    _check_neighbours(real.shape[0], k, "real", "precision/recall")
    _check_neighbours(fake.shape[0], k, "fake", "precision/recall")
    real, fake = _centred(real, fake)
    out = _manifold_metrics(
        real, fake, real_r2_pr=_knn_sq_radii(real, k)[:, k - 1], fake_r2_pr=_knn_sq_radii(fake, k)[:, k - 1]
    )
    return out["precision"], out["recall"]


def density_coverage(real: Tensor, fake: Tensor, k: int = DENSITY_COVERAGE_K) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) with balls of each real sample's k-NN radius."""
    real, fake = _check_pair(real, fake)
    _check_neighbours(real.shape[0], k, "real", "density/coverage")
    real, fake = _centred(real, fake)
    out = _manifold_metrics(real, fake, real_r2_dc=_knn_sq_radii(real, k)[:, k - 1], dc_k=k)
    return out["density"], out["coverage"]


# --- all


def feature_metrics(
    real: Tensor,
    fake: Tensor,
    *,
    real_stats: tuple[np.ndarray, np.ndarray] | None = None,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    seed: int = 0,
    pr_k: int = PRECISION_RECALL_K,
    dc_k: int = DENSITY_COVERAGE_K,
) -> dict[str, float]:
    """All metrics at once: fd, kid, kid_std, precision, recall, density, coverage, n_real, n_fake.

    ``real_stats`` (from ``gaussian_stats``) replaces recomputing the real mean/covariance for FD. The real
    k-NN radii are computed once for both k, and one real-fake distance pass serves all four k-NN metrics.
    """
    real, fake = _check_pair(real, fake)
    n_r, n_f = real.shape[0], fake.shape[0]
    _check_neighbours(n_r, pr_k, "real", "precision/recall")
    _check_neighbours(n_f, pr_k, "fake", "precision/recall")
    _check_neighbours(n_r, dc_k, "real", "density/coverage")  # with the above, also >= 2 samples for FD

    mu_r, sigma_r = gaussian_stats(real) if real_stats is None else real_stats
    if np.shape(mu_r) != (real.shape[1],):
        raise ValueError(
            f"real_stats are for {np.shape(mu_r)} features but the features have D={real.shape[1]}; "
            "recompute the cached statistics with the same feature network and layer"
        )
    fd = frechet_distance_from_stats(mu_r, sigma_r, *gaussian_stats(fake))
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

"""Feature-space metrics against independent reference computations and their known limiting values."""

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.image.kid import poly_mmd

from lightning_genae.metrics import distances
from lightning_genae.metrics.distances import (
    density_coverage,
    feature_metrics,
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
)

pytestmark = pytest.mark.quick


def _gaussian(n: int, d: int, seed: int, shift: float = 0.0, mix: torch.Tensor | None = None) -> torch.Tensor:
    """n samples of a d-dim Gaussian: correlated through ``mix`` when given, mean ``shift`` on axis 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    if mix is not None:
        x = x @ mix
    x[:, 0] += shift
    return x


def _mixing(d: int, seed: int) -> torch.Tensor:
    """A random mixing matrix, so covariances are dense and anisotropic."""
    return torch.randn(d, d, generator=torch.Generator().manual_seed(seed)) / d**0.5


def _reference_fd(real: np.ndarray, fake: np.ndarray) -> float:
    """pytorch-fid's formula with scipy.linalg.sqrtm, written independently of the module."""
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    assert np.abs(covmean.imag).max() < 1e-6 if np.iscomplexobj(covmean) else True
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def _reference_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic kernel, by explicit loops over pairs (Bińkowski et al. 2018, eq. 2)."""
    m, d = x.shape

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (a @ b / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m)


def _reference_prdc(real: np.ndarray, fake: np.ndarray, pr_k: int, dc_k: int) -> dict[str, float]:
    """Full-matrix P/R (NVlabs, ``<=``), D/C (clovaai prdc, ``<``); radius = (k+1)-th smallest incl. self."""
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=-1)
    r_pr, f_pr = np.sort(d_rr, axis=1)[:, pr_k], np.sort(d_ff, axis=1)[:, pr_k]
    r_dc = np.sort(d_rr, axis=1)[:, dc_k]
    return {
        "precision": float((d_rf <= r_pr[:, None]).any(axis=0).mean()),
        "recall": float((d_rf <= f_pr[None, :]).any(axis=1).mean()),
        "density": float((d_rf < r_dc[:, None]).sum(axis=0).mean() / dc_k),
        "coverage": float((d_rf.min(axis=1) < r_dc).mean()),
    }


@pytest.mark.parametrize(
    ("n", "d", "dtype"),
    # float16: the means and covariances are taken in float64 whatever the features' precision.
    [(500, 64, torch.float32), (1000, 256, torch.float32), (400, 16, torch.float16)],
)
def test_frechet_distance_matches_scipy_sqrtm_reference(n: int, d: int, dtype: torch.dtype) -> None:
    real = _gaussian(n, d, seed=0, mix=_mixing(d, 1)).to(dtype)
    fake = _gaussian(n, d, seed=2, shift=0.3, mix=1.2 * _mixing(d, 1) + 0.1 * _mixing(d, 3)).to(dtype)
    expected = _reference_fd(real.double().numpy(), fake.double().numpy())
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-6)


def test_identical_sets_give_the_known_limiting_values() -> None:
    x = _gaussian(200, 16, seed=0, mix=_mixing(16, 1))
    m = feature_metrics(x, x.clone(), kid_subset_size=200, kid_subsets=3)
    scale = float(np.trace(np.cov(x.double().numpy(), rowvar=False)))
    assert abs(m["fd"]) < 1e-6 * scale
    assert m["precision"] == m["recall"] == m["coverage"] == 1.0
    # Each real ball (strict radius = distance to its k-th other neighbour) holds itself and k - 1 others,
    # so the count is exactly k per real sample and density = N k / (k N) = 1; with "<=" it would be 6/5.
    assert m["density"] == 1.0
    # The cross term keeps the diagonal (torch-fidelity's estimator), so a set against itself is not 0 but
    # -(2/m)(mean diagonal - mean off-diagonal kernel); full-size subsets make it exact and deterministic.
    xn = x.double().numpy()
    k = (xn @ xn.T / 16 + 1) ** 3
    expected = 2 * ((k.sum() - np.trace(k)) / (200 * 199) - k.sum() / 200**2)
    assert m["kid"] == pytest.approx(expected, rel=1e-9) and -0.1 < m["kid"] < 0
    assert m["kid_std"] < 1e-12


def test_far_apart_clouds_share_no_support() -> None:
    real = _gaussian(300, 16, seed=0)
    fake = _gaussian(300, 16, seed=1, shift=50.0)
    m = feature_metrics(real, fake, kid_subsets=5)
    assert m["precision"] < 0.01 and m["recall"] < 0.01
    assert m["density"] == 0.0 and m["coverage"] == 0.0
    shift_sq = float(((real.mean(0) - fake.mean(0)) ** 2).sum())  # ~2500: 50 standard deviations squared
    assert m["fd"] == pytest.approx(shift_sq, rel=0.03) and m["fd"] > 2400
    assert m["kid"] > 1000


def test_independent_samples_of_one_distribution_score_close() -> None:
    real, fake = _gaussian(1000, 16, seed=0), _gaussian(1000, 16, seed=1)
    m = feature_metrics(real, fake, kid_subsets=10)
    far = frechet_distance(real, _gaussian(1000, 16, seed=1, shift=5.0))
    assert m["fd"] < 0.05 * far
    assert m["precision"] > 0.6 and m["recall"] > 0.6
    assert m["coverage"] > 0.9 and 0.8 < m["density"] < 1.2
    assert abs(m["kid"]) < 0.02


def test_kid_matches_brute_force_and_torchmetrics_for_one_full_subset() -> None:
    real = _gaussian(40, 5, seed=0, mix=_mixing(5, 1))
    fake = _gaussian(40, 5, seed=1, shift=0.5)
    kid, std = kernel_inception_distance(real, fake, subset_size=40, num_subsets=1)
    expected = _reference_mmd2(real.double().numpy(), fake.double().numpy())
    assert kid == pytest.approx(expected, rel=1e-10) and std == 0.0
    assert kid == pytest.approx(float(poly_mmd(real.double(), fake.double())), rel=1e-10)


def test_kid_is_seeded_and_defaults_its_subset_size_to_half_the_smaller_set() -> None:
    real, fake = _gaussian(120, 8, seed=0), _gaussian(90, 8, seed=1, shift=0.3)
    first = kernel_inception_distance(real, fake, subset_size=30, num_subsets=10, seed=3)
    assert first == kernel_inception_distance(real, fake, subset_size=30, num_subsets=10, seed=3)
    assert first != kernel_inception_distance(real, fake, subset_size=30, num_subsets=10, seed=4)
    assert kernel_inception_distance(real, fake, num_subsets=3) == kernel_inception_distance(
        real, fake, subset_size=45, num_subsets=3
    )
    big_real, big_fake = _gaussian(2100, 4, seed=2), _gaussian(2050, 4, seed=3)
    assert kernel_inception_distance(big_real, big_fake, num_subsets=2) == kernel_inception_distance(
        big_real, big_fake, subset_size=1000, num_subsets=2
    )


def test_kid_std_is_the_spread_over_subsets() -> None:
    real, fake = _gaussian(60, 4, seed=0), _gaussian(60, 4, seed=1, shift=0.5)
    rng = np.random.RandomState(7)  # the documented draw: torch-fidelity's real-then-fake choice per subset
    values = []
    for _ in range(4):
        r, f = rng.choice(60, 20, replace=False), rng.choice(60, 20, replace=False)
        values.append(_reference_mmd2(real.double().numpy()[r], fake.double().numpy()[f]))
    kid, std = kernel_inception_distance(real, fake, subset_size=20, num_subsets=4, seed=7)
    assert kid == pytest.approx(np.mean(values), rel=1e-9) and std == pytest.approx(np.std(values), rel=1e-9)


def test_knn_metrics_match_full_matrix_reference_formulas() -> None:
    real = _gaussian(150, 6, seed=0, mix=_mixing(6, 1))
    fake = _gaussian(120, 6, seed=1, shift=0.7, mix=1.3 * _mixing(6, 1))
    expected = _reference_prdc(real.double().numpy(), fake.double().numpy(), pr_k=3, dc_k=5)
    assert precision_recall(real, fake, k=3) == (expected["precision"], expected["recall"])
    assert density_coverage(real, fake, k=5) == pytest.approx((expected["density"], expected["coverage"]))
    m = feature_metrics(real, fake, kid_subsets=2)
    assert {key: m[key] for key in expected} == pytest.approx(expected)
    assert 0 < expected["precision"] < 1 and 0 < expected["recall"] < 1  # the case discriminates


def test_ball_boundaries_are_inclusive_for_precision_recall_and_strict_for_density_coverage() -> None:
    # Exactly representable points on a line: every real radius (k=1) is 1, and fake (-1, 0) lies exactly
    # on real (0, 0)'s sphere. Kynkäänniemi et al. count it (<=); Naeem et al.'s code does not (<).
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    fake = torch.tensor([[-1.0, 0.0], [-2.0, 0.0]])
    assert precision_recall(real, fake, k=1) == (0.5, 0.25)
    assert density_coverage(real, fake, k=1) == (0.0, 0.0)


def _exact_prdc(real: np.ndarray, fake: np.ndarray, pr_k: int, dc_k: int) -> dict[str, float]:
    """prdc's definitions on integer features in int64 arithmetic: every squared distance exact, ties kept."""

    def squared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1)

    d_rr, d_ff, d_rf = squared(real, real), squared(fake, fake), squared(real, fake)
    # The (k+1)-th smallest distance counting the sample itself (distance 0), as prdc's radii.
    r_pr, f_pr = np.sort(d_rr, axis=1)[:, pr_k], np.sort(d_ff, axis=1)[:, pr_k]
    r_dc = np.sort(d_rr, axis=1)[:, dc_k]
    return {
        "precision": float((d_rf <= r_pr[:, None]).any(axis=0).mean()),
        "recall": float((d_rf <= f_pr[None, :]).any(axis=1).mean()),
        "density": float((d_rf < r_dc[:, None]).sum() / (dc_k * len(fake))),
        "coverage": float((d_rf.min(axis=1) < r_dc).mean()),
    }


def test_exact_ties_of_duplicated_integer_features_match_the_exact_reference() -> None:
    # Pixel-like integer features on a small lattice: many distances tie exactly, and half the fakes
    # duplicate real samples. Shifting by the unrounded real mean made the distances fractions whose rounding
    # broke those ties: density 0.893, coverage 0.973 and recall 0.973 here, against the exact 0.697, 0.907
    # and 0.987.
    rng = np.random.default_rng(0)
    real = rng.integers(0, 4, size=(150, 5))
    fake = np.concatenate([real[rng.choice(150, 60)], rng.integers(0, 4, size=(60, 5))]) + 100
    real = real + 100  # a common offset, which the shift exists to remove, must not break the ties either
    expected = _exact_prdc(real, fake, pr_k=3, dc_k=5)
    real_t, fake_t = torch.tensor(real, dtype=torch.float32), torch.tensor(fake, dtype=torch.float32)
    assert density_coverage(real_t, fake_t, k=5) == (expected["density"], expected["coverage"])
    assert precision_recall(real_t, fake_t, k=3) == (expected["precision"], expected["recall"])
    m = feature_metrics(real_t, fake_t, kid_subsets=2)
    assert {key: m[key] for key in expected} == expected
    # The case has what it is about: real-fake distances exactly on a real sample's density radius.
    radii = np.sort(((real[:, None] - real[None]) ** 2).sum(-1), axis=1)[:, 5]
    assert (((real[:, None] - fake[None]) ** 2).sum(-1) == radii[:, None]).sum() > 100


def test_chunk_size_does_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _gaussian(83, 12, seed=0)
    fake = _gaussian(61, 12, seed=1, shift=1.0)
    whole = feature_metrics(real, fake, kid_subsets=3)
    for elements in (1, 7 * 61, 500):  # one row at a time, then blocks that do not divide the counts
        monkeypatch.setattr(distances, "_CHUNK_ELEMENTS", elements)
        assert feature_metrics(real, fake, kid_subsets=3) == whole
        assert precision_recall(real, fake) == (whole["precision"], whole["recall"])
        assert density_coverage(real, fake) == (whole["density"], whole["coverage"])


def test_feature_metrics_gives_every_metric_and_the_sample_counts_as_floats() -> None:
    real, fake = _gaussian(100, 8, seed=0), _gaussian(80, 8, seed=1, shift=0.5)
    fresh = feature_metrics(real, fake, kid_subsets=2)
    assert fresh["fd"] == frechet_distance(real, fake)
    assert set(fresh) == {
        "fd",
        "kid",
        "kid_std",
        "precision",
        "recall",
        "density",
        "coverage",
        "n_real",
        "n_fake",
    }
    assert (fresh["n_real"], fresh["n_fake"]) == (100, 80)
    assert all(isinstance(value, float) for value in fresh.values())


@pytest.mark.parametrize(
    ("real", "fake", "message"),
    [
        (torch.randn(20, 4), torch.full((20, 4), float("nan")), "NaN or Inf"),
        (torch.randn(3, 4), torch.randn(20, 4), "give at least 6 "),
        (torch.randn(20, 4), torch.randn(3, 4), "give at least 4 "),
        (
            torch.randn(5, 4),
            torch.randn(20, 4),
            "give at least 6 ",
        ),  # density/coverage need k=5 < N
    ],
)
def test_invalid_inputs_raise_with_the_fix(real: torch.Tensor, fake: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        feature_metrics(real, fake, kid_subsets=1)


def test_kid_subset_size_is_validated() -> None:
    real, fake = torch.randn(20, 4), torch.randn(10, 4)
    with pytest.raises(ValueError, match="subset size <= 10"):
        kernel_inception_distance(real, fake, subset_size=11)
    with pytest.raises(ValueError, match="from 2 to"):
        kernel_inception_distance(real, fake, subset_size=1)


def test_frechet_distance_needs_two_samples_per_set_for_a_covariance() -> None:
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(torch.randn(1, 4), torch.randn(20, 4))


@pytest.mark.parametrize("order", ["as the real ones", "shuffled"])
def test_ties_of_duplicated_real_valued_features_match_the_exact_reference_in_any_order(order) -> None:
    """Fakes that repeat real samples (a real folder scored against itself, a memorising model): each
    distance to a repeated sample equals a radius exactly, and the result must not depend on where in a
    BLAS block the pair fell (compared without a tolerance, density comes out 1.003-1.005 for shuffled
    copies of such features)."""
    rng = np.random.default_rng(1)
    # Float32 features, as a backbone gives them; at this size the two passes round some ties apart.
    real = (rng.normal(size=(359, 256)) * 5.0 + 11.3).astype(np.float32).astype(np.float64)
    permutation = rng.permutation(359) if order == "shuffled" else np.arange(359)
    fake = np.concatenate([real[permutation], rng.normal(size=(40, 256)) * 5.0 + 11.3])
    expected = _exact_prdc(real, fake, pr_k=3, dc_k=5)
    real_t, fake_t = torch.tensor(real), torch.tensor(fake)
    assert density_coverage(real_t, fake_t, k=5) == (expected["density"], expected["coverage"])
    assert precision_recall(real_t, fake_t, k=3) == (expected["precision"], expected["recall"])
    m = feature_metrics(real_t, fake_t, kid_subsets=2)
    assert {key: m[key] for key in expected} == expected
    same = density_coverage(real_t, real_t[torch.tensor(rng.permutation(359))], k=5)
    assert same == (1.0, 1.0)


def test_one_far_off_fake_leaves_the_others_comparisons_exact() -> None:
    """The tolerance for ties is each pair's, not one from the largest norms: a fake a million units out
    must not widen every other fake's balls."""
    rng = np.random.default_rng(2)
    real = rng.normal(size=(300, 64))
    fake = rng.normal(size=(300, 64)) * 1.3 + 0.3
    for outlier in (1e6, 3e6):
        fake[0] = outlier
        expected = _exact_prdc(real, fake, pr_k=3, dc_k=5)
        real_t, fake_t = torch.tensor(real), torch.tensor(fake)
        assert precision_recall(real_t, fake_t, k=3) == (expected["precision"], expected["recall"])
        assert density_coverage(real_t, fake_t, k=5) == (expected["density"], expected["coverage"])

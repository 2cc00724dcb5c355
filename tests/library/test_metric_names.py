"""The metric vocabulary: every logged name parses back to itself and has its direction; unknown ones fail."""

from __future__ import annotations

import pytest

from lightning_genae.experiment.config import RunConfig
from lightning_genae.metrics import backbones, names
from lightning_genae.metrics.names import (
    Direction,
    MetricName,
    UnknownMetric,
    direction,
    headline_metric,
    metric_name,
    on_split,
    try_parse,
)

pytestmark = pytest.mark.quick

HIGHER, LOWER, NONE = Direction.HIGHER, Direction.LOWER, Direction.NONE

# Generative metrics: per split (callback) and without one (eval.json of --evaluate-folder).
GENERATIVE = {
    "fd_classifier": LOWER,
    "fid_inception": LOWER,
    "kid_classifier": LOWER,
    "kid_inception": LOWER,
    "kid_std_classifier": NONE,
    "kid_std_inception": NONE,
    **{f"{key}_{backbone}": HIGHER for key in ("precision", "recall", "density", "coverage")
       for backbone in ("classifier", "inception")},
}  # fmt: skip

# What the models and callbacks log (models/*.py, metrics/reconstruction.py, metrics/representation.py).
LOGGED = {
    **GENERATIVE,
    **{f"{split}/{name}": value for split in ("val", "test") for name, value in GENERATIVE.items()},
    "train/loss": LOWER,
    "val/loss": LOWER,
    "test/loss": LOWER,
    "train/mse": LOWER,
    "val/mse": LOWER,
    "test/mse": LOWER,
    "train/recon": LOWER,
    "val/recon": LOWER,
    "train/kl": NONE,
    "test/kl": NONE,
    "train/elbo": HIGHER,
    "val/elbo": HIGHER,
    "train/beta": NONE,
    "val/code_kl": LOWER,
    "test/code_kl": LOWER,
    "val/psnr": HIGHER,
    "test/psnr": HIGHER,
    "val/ssim": HIGHER,
    "test/ssim": HIGHER,
    "test/probe_acc": HIGHER,
    "test/pca_probe_acc": HIGHER,
    "test/pca_mse": LOWER,
    "test/probe_n_train": NONE,
    "test/probe_n_test": NONE,
    "train/loss_d": NONE,
    "train/loss_g": NONE,
    "train/d_real": NONE,
    "train/d_fake": NONE,
    "val/d_real": NONE,
    "test/d_real": NONE,
    # The autoencoder discriminator (models/began.py).
    "train/k": NONE,
    "train/m_global": LOWER,
    "train/d_real_energy": NONE,
    "train/d_fake_energy": NONE,
    "val/d_real_energy": NONE,
    "test/d_real_energy": NONE,
    # The overfitting signal at every validation (callbacks/overfitting.py).
    **{f"val/d_{score}_{split}": NONE for score in ("logit", "sign", "energy") for split in ("train", "val")},
    # The VAE-GAN (models/vaegan.py).
    "train/loss_enc": NONE,
    "train/loss_dec": NONE,
    "train/feature": NONE,
    "val/kl": NONE,
    # Sequence models (callbacks/sequence_metrics.py).
    **{
        f"{split}/{kind}": LOWER
        for split in ("val", "test")
        for kind in ("discriminative_quick", "predictive_quick")
    },
    "step": NONE,
}


@pytest.mark.parametrize("name", sorted(LOGGED))
def test_every_logged_name_parses_and_formats_back_to_itself(name: str) -> None:
    parsed = MetricName.parse(name)
    assert parsed.format() == str(parsed) == name
    assert try_parse(name) == parsed


@pytest.mark.parametrize(("name", "expected"), sorted(LOGGED.items()))
def test_every_logged_name_has_its_direction(name: str, expected: Direction) -> None:
    assert direction(name) is expected


def test_parts_of_a_name_are_split_kind_and_backbone() -> None:
    assert MetricName.parse("test/kid_std_classifier") == MetricName("kid_std", "classifier", "test")
    assert MetricName.parse("train/loss_d") == MetricName("loss_d", None, "train")
    assert MetricName.parse("fid_inception") == MetricName("fid", "inception", None)


def test_only_the_inception_frechet_distance_is_called_fid() -> None:
    assert metric_name("fd", "inception") == "fid_inception"
    assert metric_name("fd", "classifier") == "fd_classifier"
    assert metric_name("kid", "inception") == "kid_inception"
    assert [metric_name(key, "classifier") for key in names.GENERATIVE_KEYS] == [
        "fd_classifier", "kid_classifier", "kid_std_classifier", "precision_classifier",
        "recall_classifier", "density_classifier", "coverage_classifier",
    ]  # fmt: skip


def test_headline_is_the_validation_frechet_distance_of_the_backbone() -> None:
    assert headline_metric("classifier") == "val/fd_classifier"
    assert headline_metric("inception") == "val/fid_inception"


def test_the_same_metric_on_another_split() -> None:
    assert on_split("val/fd_classifier", "test") == "test/fd_classifier"
    assert on_split("val/loss", "test") == "test/loss"
    assert MetricName.parse("fd_classifier").on("val").format() == "val/fd_classifier"
    assert MetricName.parse("test/psnr").on(None).format() == "psnr"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("val/foo", "known kinds: fd, fid, kid"),
        ("fd_inception", "fid_inception"),
        ("fid_classifier", "fid is logged only as fid_inception"),
        ("val/fd", "fd is logged only as fd_classifier"),
        ("loss_classifier", "loss is logged only as loss"),
        ("valid/loss", "use one of train, val, test"),
        ("/loss", "use one of train, val, test"),
        ("", "unknown metric kind ''"),
    ],
)
def test_an_unknown_name_is_a_one_line_error_that_says_what_is_known(name: str, says: str) -> None:
    with pytest.raises(UnknownMetric, match="metric") as raised:
        MetricName.parse(name)
    message = str(raised.value)
    assert says in message and "\n" not in message and repr(name) in message
    assert try_parse(name) is None
    with pytest.raises(UnknownMetric):
        direction(name)


def test_every_kind_has_a_direction_and_backbones_come_from_the_vocabulary() -> None:
    assert all(isinstance(kind.direction, Direction) for kind in names.KINDS.values())
    assert set(names.GENERATIVE_KEYS) <= set(names.KINDS)
    assert backbones.BACKBONES is names.BACKBONES
    # Every backbone of the vocabulary, and `none`, which names no metric (the run skips them).
    assert RunConfig.choices("backbone") == (*names.BACKBONES, "none")

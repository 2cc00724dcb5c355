"""The metric vocabulary: every logged name, `[split/]kind[_backbone]`, and which side of it is better. The
backbone is named because features of different networks do not compare; only Inception's FD is FID."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum

# Feature networks the generative metrics can be computed with (lightning_genae.metrics.backbones).
BACKBONES = ("classifier", "inception")
# No feature backbone: no image metrics (and no classifier trained for them).
NO_BACKBONE = "none"
SPLITS = ("train", "val", "test")


class Direction(Enum):
    """Which side of a metric is better; NONE for diagnostics that are read, not ranked."""

    HIGHER = "higher is better"
    LOWER = "lower is better"
    NONE = "no better side"


@dataclass(frozen=True)
class MetricKind:
    """What the vocabulary knows about one kind of metric."""

    direction: Direction
    # The backbones a generative metric exists for (fid: only Inception; fd: every other network, so the two
    # never name the same number); the other metrics never carry one.
    backbones: tuple[str, ...] = ()


_NOT_INCEPTION = tuple(b for b in BACKBONES if b != "inception")

KINDS: dict[str, MetricKind] = {
    # Generated against real images in a backbone's feature space (distances.feature_metrics).
    "fd": MetricKind(Direction.LOWER, _NOT_INCEPTION),
    "fid": MetricKind(Direction.LOWER, ("inception",)),
    "kid": MetricKind(Direction.LOWER, BACKBONES),
    # The spread of KID over its subsets: says how far to trust `kid`, not how good the model is.
    "kid_std": MetricKind(Direction.NONE, BACKBONES),
    "precision": MetricKind(Direction.HIGHER, BACKBONES),
    "recall": MetricKind(Direction.HIGHER, BACKBONES),
    "density": MetricKind(Direction.HIGHER, BACKBONES),
    "coverage": MetricKind(Direction.HIGHER, BACKBONES),
    # Training objectives and reconstruction (models/ae.py, models/vae.py).
    "loss": MetricKind(Direction.LOWER),
    "mse": MetricKind(Direction.LOWER),
    "recon": MetricKind(Direction.LOWER),
    # A small KL can be posterior collapse as well as a good fit, so it is not ranked on its own.
    "kl": MetricKind(Direction.NONE),
    "elbo": MetricKind(Direction.HIGHER),
    "beta": MetricKind(Direction.NONE),
    # KL of a Gaussian fitted to a split's codes against the prior's moments (models/aae.py).
    "code_kl": MetricKind(Direction.LOWER),
    # The scheduled probability of feeding a sequence decoder the true previous value (models/rae.py).
    "teacher_forcing": MetricKind(Direction.NONE),
    # Reconstruction quality on [0, 1] images (metrics/reconstruction.py).
    "psnr": MetricKind(Direction.HIGHER),
    "ssim": MetricKind(Direction.HIGHER),
    # Representation quality of the codes and the PCA baseline (metrics/representation.py).
    "probe_acc": MetricKind(Direction.HIGHER),
    "pca_probe_acc": MetricKind(Direction.HIGHER),
    "pca_mse": MetricKind(Direction.LOWER),
    "probe_n_train": MetricKind(Direction.NONE),
    "probe_n_test": MetricKind(Direction.NONE),
    # Adversarial training (models/gan.py): the losses trade off against each other; the logits are read.
    "loss_d": MetricKind(Direction.NONE),
    "loss_g": MetricKind(Direction.NONE),
    "d_real": MetricKind(Direction.NONE),
    "d_fake": MetricKind(Direction.NONE),
    # An autoencoder discriminator (models/began.py): energies and k_t are read; M_global falls as G improves.
    "d_real_energy": MetricKind(Direction.NONE),
    "d_fake_energy": MetricKind(Direction.NONE),
    "k": MetricKind(Direction.NONE),
    # The overfitting signal (callbacks/overfitting.py) on fixed training and validation batches, both
    # logged under `val/` with every validation (a `train/` name would read as a training-step value).
    **{
        f"d_{score}_{split}": MetricKind(Direction.NONE)
        for score in ("logit", "sign", "energy")
        for split in ("train", "val")
    },
    "m_global": MetricKind(Direction.LOWER),
    # The VAE-GAN's objectives and feature-space error (models/vaegan.py): that space moves as D trains.
    "loss_enc": MetricKind(Direction.NONE),
    "loss_dec": MetricKind(Direction.NONE),
    "feature": MetricKind(Direction.NONE),
    # Quick variants of TimeGAN's scores (metrics/sequences.py), not its protocol's (metrics/timegan.py).
    "discriminative_quick": MetricKind(Direction.LOWER),
    "predictive_quick": MetricKind(Direction.LOWER),
    # The spread (std) of each over its repeated fits: how far to trust it, not how good the model is.
    "discriminative_quick_std": MetricKind(Direction.NONE),
    "predictive_quick_std": MetricKind(Direction.NONE),
    # The share of series outside the training range, generated and real (its floor).
    "out_of_range": MetricKind(Direction.LOWER),
    "out_of_range_real": MetricKind(Direction.NONE),
    # The discriminative score by a wider post-hoc GRU, and of real against real series (its floor).
    "discriminative_wide": MetricKind(Direction.LOWER),
    "discriminative_wide_real": MetricKind(Direction.NONE),
    # The x-axis override every evaluation logs (models/base.py), logged without a split.
    "step": MetricKind(Direction.NONE),
}

# What metrics/sequences.py scores generated series by, in this order, each floor beside its score.
SERIES_SCORES = (
    "discriminative_quick",
    "predictive_quick",
    "out_of_range",
    "out_of_range_real",
    "discriminative_wide",
    "discriminative_wide_real",
)
# What distances.feature_metrics returns and the callbacks log, in this order, each as
# `metric_name(key, backbone)`: the kinds per backbone, `fid` being `fd`'s Inception name.
GENERATIVE_KEYS = tuple(kind for kind, spec in KINDS.items() if spec.backbones and kind != "fid")


class UnknownMetric(ValueError):
    """A name or part of one that is not in the vocabulary; the message lists what is."""


@dataclass(frozen=True)
class MetricName:
    """A parsed metric name; `MetricName.parse(name).format() == name` for every name the project logs."""

    kind: str
    backbone: str | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        spec = kind_spec(self.kind)
        if spec is None:
            problem = f"unknown metric kind {self.kind!r}; known kinds: {', '.join(KINDS)}"
        elif self.split is not None and self.split not in SPLITS:
            problem = f"unknown split {self.split!r} in a metric name; use one of {', '.join(SPLITS)}"
        elif self.backbone not in (backbones := spec.backbones or (None,)):
            spellings = ", ".join(self.kind if one is None else f"{self.kind}_{one}" for one in backbones)
            hint = " (the Inception Fréchet distance is fid_inception)" if self.kind == "fd" else ""
            problem = f"{self.kind} is logged only as {spellings}{hint}"
        else:
            return
        raise UnknownMetric(problem)

    @classmethod
    def parse(cls, name: str) -> MetricName:
        """`test/kid_std_classifier` -> MetricName("kid_std", "classifier", "test"); else UnknownMetric."""
        split, separator, base = name.rpartition("/")
        kind, backbone = base, None
        for candidate in BACKBONES:
            if base.endswith("_" + candidate) and base[: -len(candidate) - 1] in KINDS:
                kind, backbone = base[: -len(candidate) - 1], candidate
        try:
            return cls(kind, backbone, split if separator else None)
        except UnknownMetric as error:
            raise UnknownMetric(f"metric {name!r}: {error}") from None

    @classmethod
    def generative(cls, key: str, backbone: str, split: str | None = None) -> MetricName:
        """The name of `distances.feature_metrics`' `key` on `backbone`; `fd` is `fid` only with Inception."""
        return cls("fid" if key == "fd" and backbone == "inception" else key, backbone, split)

    def format(self) -> str:
        """The logged name: `[split/]kind[_backbone]`."""
        base = self.kind if self.backbone is None else f"{self.kind}_{self.backbone}"
        return base if self.split is None else f"{self.split}/{base}"

    def on(self, split: str | None) -> MetricName:
        """The same metric measured on another split (None: without a split, as eval.json of a folder)."""
        return replace(self, split=split)

    @property
    def direction(self) -> Direction:
        return kind_spec(self.kind).direction

    def __str__(self) -> str:
        return self.format()


# The importance-sampled negative log-likelihood (metrics/likelihood.py) names its number of samples, as
# papers do (`nll_is5000`): estimates with different k are different bounds and must not be compared.
IMPORTANCE_SAMPLED_NLL = re.compile(r"nll_is[1-9][0-9]*")


def kind_spec(kind: str) -> MetricKind | None:
    """The vocabulary's entry for a metric kind, including the k-named likelihood estimates."""
    if IMPORTANCE_SAMPLED_NLL.fullmatch(kind):
        return MetricKind(Direction.LOWER)
    return KINDS.get(kind)


def try_parse(name: str) -> MetricName | None:
    """The parsed name, or None for a name the vocabulary does not know (e.g. from another version)."""
    try:
        return MetricName.parse(name)
    except UnknownMetric:
        return None


def test_headline(headline: str | None, metrics: Mapping[str, object]) -> str | None:
    """The test-split version of a run's headline metric (`val/fd_x` -> `test/fd_x`), else (no headline this
    version can parse) the test Fréchet distance of whichever backbone `metrics` holds, else None."""
    parsed = try_parse(headline) if isinstance(headline, str) else None
    if parsed is not None:
        return parsed.on("test").format()
    return frechet_distance_name(metrics, "test")


def frechet_distance_name(metrics: Mapping[str, object], split: str | None) -> str | None:
    """The Fréchet distance name on `split` (None: unsplit) of the first backbone `metrics` has one for."""
    for backbone in BACKBONES:
        candidate = MetricName.generative("fd", backbone, split).format()
        if candidate in metrics:
            return candidate
    return None


def metric_name(key: str, backbone: str) -> str:
    """A generative metric's name without split: `fd_classifier`, `kid_inception`, ..., `fid_inception`."""
    return MetricName.generative(key, backbone).format()


def headline_metric(backbone: str) -> str:
    """The metric that picks a generative model's best checkpoint: its validation Fréchet distance."""
    return MetricName.generative("fd", backbone, "val").format()


def on_split(name: str, split: str) -> str:
    """The same metric on another split: `on_split("val/fd_classifier", "test") == "test/fd_classifier"`."""
    return MetricName.parse(name).on(split).format()


def direction(name: str) -> Direction:
    """Which side of the logged metric `name` is better; UnknownMetric for a name the project never logs."""
    return MetricName.parse(name).direction

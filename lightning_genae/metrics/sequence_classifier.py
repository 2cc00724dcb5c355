"""The sequence feature classifier: a small GRU trained on a sequence dataset's labels, whose penultimate
layer gives `fd_classifier` and its kin for series; shipped for `smnist` (MNIST rows as 28 steps)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_genae.datamodules import build_datamodule
from lightning_genae.metrics import classifier as classifier_lib
from lightning_genae.metrics.classifier import DEFAULT_SEED, EVAL_BATCH

MANIFEST_NAME = "sequence_classifiers.json"

# Training recipe (CPU-sized: a few minutes on one core for smnist).
BATCH_SIZE = 128
MAX_LR = 1e-2
WEIGHT_DECAY = 1e-4
DEFAULT_EPOCHS = 5
# GRUs trained with a high learning rate need their gradient norm bounded early on.
CLIP_NORM = 1.0

Splits = dict[str, tuple[Tensor, Tensor]]


def smnist_splits(data_dir: str | Path) -> Splits:
    """MNIST as uint8 sequences [N, 28 rows, 28 columns] with labels, in `mnist`'s fixed splits."""
    datamodule = build_datamodule("mnist", data_dir=str(data_dir))
    datamodule.prepare_data()
    splits = {}
    for split in ("train", "val", "test"):
        images, labels = datamodule.split_tensors(split)
        splits[split] = (images[:, 0], labels)
    return splits


# The sequence datasets a classifier can be trained on: name -> reader of uint8 [N, T, C] splits.
SEQUENCE_DATASETS: dict[str, Callable[[str | Path], Splits]] = {"smnist": smnist_splits}


@dataclass(frozen=True)
class SequenceClassifierConfig:
    """Everything needed to rebuild the network before loading its state dict."""

    seq_len: int
    channels: int
    num_classes: int
    hidden: int = 96
    feature_dim: int = 64
    dropout: float = 0.2


class SequenceClassifier(nn.Module):
    """GRU over the steps, its last hidden state -> fc -> BN (the features, pre-ReLU as the image
    classifier's) -> ReLU -> dropout -> fc. `features` clamps series to [-1, 1], as images are clamped."""

    checkpoint_format = "lightning-genae-sequence-classifier/1"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SequenceClassifier:
        return cls(SequenceClassifierConfig(**config))

    def __init__(self, config: SequenceClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.rnn = nn.GRU(config.channels, config.hidden, batch_first=True)
        self.embed = nn.Sequential(
            nn.Linear(config.hidden, config.feature_dim, bias=False), nn.BatchNorm1d(config.feature_dim)
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(config.feature_dim, config.num_classes)
        )

    def features(self, series: Tensor) -> Tensor:
        """Series [N, T, C] in [-1, 1] -> penultimate features [N, feature_dim]."""
        _, last = self.rnn(series.clamp(-1.0, 1.0))
        return self.embed(last[-1])

    def forward(self, series: Tensor) -> Tensor:
        """Series [N, T, C] in [-1, 1] -> class logits [N, num_classes]."""
        return self.head(self.features(series))


def train_sequence_classifier(
    splits: Splits, *, seed: int = DEFAULT_SEED, epochs: int = DEFAULT_EPOCHS, verbose: bool = False
) -> tuple[SequenceClassifier, float]:
    """Train on the uint8 [N, T, C] train split, keeping the epoch with the best val accuracy; returns the
    model (eval mode, CPU) and its test accuracy, deterministic given `seed` (the caller's stream is kept)."""
    train_series, train_labels = splits["train"]
    _, seq_len, channels = train_series.shape
    config = SequenceClassifierConfig(seq_len, channels, int(train_labels.max()) + 1)
    return classifier_lib.fit_best_on_validation(
        lambda: SequenceClassifier(config),
        lambda split, index: (splits[split][0][index], splits[split][1][index]),
        {split: len(labels) for split, (_, labels) in splits.items()},
        seed=seed,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        max_lr=MAX_LR,
        weight_decay=WEIGHT_DECAY,
        clip_norm=CLIP_NORM,
        verbose=verbose,
    )


def checkpoint_name(data: str) -> str:
    return f"sequence-classifier-{data}.pt"


@dataclass(eq=False)
class SequenceFeatures:
    """Features of series under a shipped classifier, named like an image backbone (`classifier`)."""

    model: SequenceClassifier
    description: str
    name = "classifier"

    @torch.no_grad()
    def __call__(self, series: Tensor) -> Tensor:
        """Float32 features [N, feature_dim] on the CPU of series [N, T, C] in [-1, 1]."""
        expected = (self.model.config.seq_len, self.model.config.channels)
        if series.dim() != 3 or tuple(series.shape[1:]) != expected:
            raise ValueError(
                f"{self.description} takes series [N, {expected[0]}, {expected[1]}], got {list(series.shape)}"
            )
        # Outside inference mode and autocast: the features must not depend on the caller's context.
        with torch.inference_mode(False), torch.autocast("cpu", enabled=False):
            series = series.detach().to("cpu", torch.float32).clone()
            return torch.cat([self.model.features(chunk) for chunk in series.split(EVAL_BATCH)])


def shipped_sequence_features(data: str) -> SequenceFeatures | None:
    """The shipped classifier features of `data` (SHA-256 checked), or None where none is shipped for it."""
    shipped = classifier_lib.load_shipped(data, "sequence classifier", MANIFEST_NAME, SequenceClassifier)
    return None if shipped is None else SequenceFeatures(*shipped[:2])

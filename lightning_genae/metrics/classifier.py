"""The feature classifier: a small CNN trained on a dataset's labels, whose penultimate layer FD/KID use; its
training and checkpoint format serve the sequence classifier too (`lightning_genae.experiment.classifier`)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_genae.cache import file_sha256, save_torch_atomically, write_file_atomically
from lightning_genae.datamodules import to_model_range
from lightning_genae.errors import GenaeError, describe_error
from lightning_genae.nets.conv import downsampling_plan

if TYPE_CHECKING:
    from lightning_genae.datamodules import ImageDataModule

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST_NAME = "classifiers.json"
CHECKPOINT_FORMAT = "lightning-genae-classifier/1"
FEATURE_DIM = 128
# Evaluation must not move with the run's --seed, so every classifier (shipped or cached) uses this one.
DEFAULT_SEED = 0

# Training recipe; part of the cache key, so changing it retrains cached classifiers instead of reusing them.
BATCH_SIZE = 128
MAX_LR = 3e-3
WEIGHT_DECAY = 5e-4
# Epochs scale inversely with the training split: ~330k image presentations, within [5, 60] epochs.
SAMPLES_PER_RUN = 330_000
MIN_EPOCHS, MAX_EPOCHS = 5, 60
# Training stops once validation accuracy has gone this many epochs without rising above its best.
PATIENCE = 5
EVAL_BATCH = 1000


class BackboneUnavailable(GenaeError):
    """A feature backbone cannot be built here (weights missing, offline, no labels); says how to fix it."""


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything needed to rebuild the network before loading its state dict."""

    image_shape: tuple[int, int, int]
    num_classes: int
    width: int = 32
    max_width: int = 128
    feature_dim: int = FEATURE_DIM
    dropout: float = 0.3


class FeatureClassifier(nn.Module):
    """Per halving of the image a conv3x3-BN-ReLU-maxpool block, then fc -> BN (the features) -> ReLU -> fc;
    features before the ReLU are closer to Gaussian (as FD assumes), of about unit scale per dimension."""

    checkpoint_format = CHECKPOINT_FORMAT

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FeatureClassifier:
        return cls(ClassifierConfig(**{**config, "image_shape": tuple(config["image_shape"])}))

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        channels, height, _ = config.image_shape
        stages, base = downsampling_plan(height)
        blocks: list[nn.Module] = []
        in_ch = channels
        for stage in range(stages):
            out_ch = min(config.width * 2**stage, config.max_width)
            blocks += [
                nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            in_ch = out_ch
        self.conv = nn.Sequential(*blocks)
        self.embed = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_ch * base * base, config.feature_dim, bias=False),
            nn.BatchNorm1d(config.feature_dim),
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(config.feature_dim, config.num_classes)
        )

    def features(self, x: Tensor) -> Tensor:
        """Images in [-1, 1] -> penultimate features [N, feature_dim]."""
        return self.embed(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        """Images in [-1, 1] -> class logits [N, num_classes]."""
        return self.head(self.features(x))


def default_epochs(num_train: int) -> int:
    """Epochs for a training split of `num_train` images: 6 for MNIST-sized data, 60 for digits."""
    return max(MIN_EPOCHS, min(MAX_EPOCHS, math.ceil(SAMPLES_PER_RUN / max(num_train, 1))))


@torch.no_grad()
def accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, batch_size: int = EVAL_BATCH) -> float:
    """Fraction of `inputs` (uint8, or floats in [-1, 1]) whose predicted class is `labels`, in eval mode."""
    return accuracy_over(model, zip(inputs.split(batch_size), labels.split(batch_size), strict=True))


@torch.no_grad()
def accuracy_over(model: nn.Module, blocks: Iterable[tuple[Tensor, Tensor]]) -> float:
    """`accuracy` over (inputs, labels) blocks, so that a split need not be held whole."""
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for inputs, labels in blocks:
        batch = inputs.to(device)
        batch = to_model_range(batch) if batch.dtype == torch.uint8 else batch.float()
        correct += int((model(batch).argmax(dim=1).cpu() == labels).sum())
        total += len(labels)
    return correct / max(total, 1)


def fit_best_on_validation(
    build: Callable[[], nn.Module],
    read: Callable[[str, Tensor], tuple[Tensor, Tensor]],
    sizes: dict[str, int],
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    max_lr: float,
    weight_decay: float,
    clip_norm: float | None = None,
    patience: int | None = None,
    verbose: bool = False,
) -> tuple[Any, float]:
    """Train `build()` on the uint8 "train" split with AdamW and one-cycle, keeping the best epoch on "val"
    (stopping after `patience` without a rise); returns it and its test accuracy, deterministic given `seed`.
    `read(split, indices)` gives a batch of a split at a time, so a streamed split is never read whole."""

    def split_accuracy(split: str) -> float:
        return accuracy_over(
            model, (read(split, block) for block in torch.arange(sizes[split]).split(EVAL_BATCH))
        )

    # Imported here: console imports Lightning, which the command's --help must not wait for.
    from lightning_genae.progress import PhaseProgress

    # enable_grad: a caller may load backbones under no_grad.
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        model = build()
        progress = PhaseProgress(
            "training the feature classifier", epochs, "epoch", interval=0.0 if verbose else 10.0
        )
        # A last batch of one would break batch norm; drop the ragged tail unless it is the only batch.
        steps_per_epoch = max(1, sizes["train"] // batch_size)
        shuffle = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=max_lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr, total_steps=epochs * steps_per_epoch
        )
        best_accuracy, best_state, best_epoch = -1.0, copy.deepcopy(model.state_dict()), 0
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(sizes["train"], generator=shuffle)
            for step in range(steps_per_epoch):
                inputs, labels = read("train", order[step * batch_size : (step + 1) * batch_size])
                loss = F.cross_entropy(model(to_model_range(inputs)), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
                optimizer.step()
                schedule.step()
            val_accuracy = split_accuracy("val")
            progress.advance(detail=f"loss {loss.item():.4f}, val acc {val_accuracy:.2%}")
            if val_accuracy > best_accuracy:
                best_epoch = epoch
            # `>=` prefers the later epoch on ties: it has seen more of the schedule's low learning rates.
            if val_accuracy >= best_accuracy:
                best_accuracy, best_state = val_accuracy, copy.deepcopy(model.state_dict())
            if patience is not None and epoch - best_epoch >= patience and epoch < epochs:
                print(
                    f"training the feature classifier: stopped after epoch {epoch}/{epochs}: validation "
                    f"accuracy has not risen for {patience} epochs (best {best_accuracy:.2%})",
                    file=sys.stderr,
                    flush=True,
                )
                break
    model.load_state_dict(best_state)
    return model, split_accuracy("test")


def train_classifier(
    datamodule: ImageDataModule,
    *,
    seed: int = DEFAULT_SEED,
    epochs: int | None = None,
    patience: int | None = PATIENCE,
    verbose: bool = False,
) -> tuple[FeatureClassifier, float]:
    epochs = epochs if epochs is not None else default_epochs(datamodule.split_size("train"))
    assert datamodule.num_classes is not None
    config = ClassifierConfig(datamodule.image_shape, datamodule.num_classes)
    return fit_best_on_validation(
        lambda: FeatureClassifier(config),
        datamodule.items_at,
        {split: datamodule.split_size(split) for split in ("train", "val", "test")},
        seed=seed,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        max_lr=MAX_LR,
        weight_decay=WEIGHT_DECAY,
        patience=patience,
        verbose=verbose,
    )


def training_fingerprint(datamodule: ImageDataModule, *, seed: int, epochs: int) -> str:
    """SHA-256 of everything a trained classifier depends on: recipe, architecture and the train/val images
    and labels (two folders with the same class counts must not share a cached classifier)."""
    config = ClassifierConfig(datamodule.image_shape, datamodule.num_classes or 0)
    recipe = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(config),
        "seed": seed,
        "epochs": epochs,
        "patience": PATIENCE,
        "batch_size": BATCH_SIZE,
        "max_lr": MAX_LR,
        "weight_decay": WEIGHT_DECAY,
        # By content, as every cache is: the splits' hashes, which a streamed split's manifest records.
        "data": {split: datamodule.content_sha256(split) for split in ("train", "val")},
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def save_checkpoint(model: nn.Module, path: str | Path, **meta: Any) -> str:
    """Write a feature network's config, state dict and `meta` to `path` atomically; return its SHA-256."""
    payload = {
        "format": model.checkpoint_format,
        # Tuples as lists, as the file's reader gets them back.
        "config": {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(model.config).items()
        },
        "state_dict": {key: value.detach().cpu().clone() for key, value in model.state_dict().items()},
        # Sorted: a run's first-use training and the classifier command record the same meta in another
        # order, and identical weights must hash alike (a run compares its classifier by this hash).
        "meta": dict(sorted(meta.items())),
    }
    # Serialised in memory: a temporary file's name would make identical weights hash differently.
    return hashlib.sha256(save_torch_atomically(path, payload)).hexdigest()


def load_checkpoint(
    path: str | Path,
    network: type | None = None,
    *,
    what: str = "classifier",
    advice: str = "delete it so it is trained again, or reinstall lightning-genae for a shipped one",
) -> tuple[Any, dict[str, Any]]:
    """The `network` (a FeatureClassifier unless given) stored at `path`, eval mode, CPU, with its meta."""
    try:
        # weights_only: a checkpoint is tensors and plain values, never code to unpickle.
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = (network or FeatureClassifier).from_config(payload["config"])
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:
        raise GenaeError(f"{what} checkpoint {path} is unreadable ({describe_error(exc)}); {advice}") from exc
    model.requires_grad_(False)
    model.eval()
    return model, dict(payload.get("meta", {}))


def load_shipped(
    data: str, what: str, manifest_name: str = MANIFEST_NAME, network: type | None = None
) -> tuple[Any, str, str] | None:
    """The shipped `network` of `data` with its description and SHA-256, or None where none is shipped."""
    entry = load_manifest(manifest_name=manifest_name).get(data)
    if entry is None:
        return None
    path = WEIGHTS_DIR / entry["file"]
    fix = f"reinstall lightning-genae or re-create it with `{entry['command']}`"
    if not path.is_file():
        raise BackboneUnavailable(f"{what}: shipped checkpoint {path} is missing; {fix}")
    sha256 = file_sha256(path)
    if sha256 != entry["sha256"]:
        raise BackboneUnavailable(
            f"{what}: {path}'s SHA-256 {sha256[:12]} is not the manifest's {entry['sha256'][:12]}; {fix}"
        )
    # The manifest's bytes: a load that fails is the code's defect, said by load_checkpoint in one line.
    model, _ = load_checkpoint(path, network, what=what, advice="reinstall lightning-genae")
    return model, f"{what} ({data}, sha256 {sha256[:8]}, test acc {entry['test_accuracy']:.2%})", sha256


def load_manifest(
    weights_dir: str | Path | None = None, manifest_name: str = MANIFEST_NAME
) -> dict[str, dict[str, Any]]:
    """The shipped classifiers by dataset ({} without a manifest); `manifest_name` picks another manifest."""
    path = Path(weights_dir or WEIGHTS_DIR) / manifest_name
    return json.loads(path.read_text()) if path.is_file() else {}


def write_manifest_entry(
    weights_dir: str | Path, data: str, entry: dict[str, Any], manifest_name: str = MANIFEST_NAME
) -> Path:
    """Replace the manifest entry of `data`, keeping the others; keys sorted so diffs stay small."""
    manifest = load_manifest(weights_dir, manifest_name)
    manifest[data] = entry
    path = Path(weights_dir) / manifest_name
    text = json.dumps(dict(sorted(manifest.items())), indent=2, sort_keys=True) + "\n"
    write_file_atomically(path, text)
    return path


def checkpoint_name(data: str) -> str:
    return f"classifier-{data}.pt"

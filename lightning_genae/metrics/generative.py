"""Generated against real images: features of a split, seeded subsets, and the named generative metrics.

`score_generated` is the one evaluation path for generated images: the metrics callback (samples of a
model) and `--evaluate-folder` (a folder of images) both call it, so they pick real images, name the
numbers and record backbone, split and sample counts the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lightning_genae.cache import cache_root, save_torch_atomically
from lightning_genae.console import evaluation_progress, say
from lightning_genae.errors import describe_error
from lightning_genae.metrics.backbones import FeatureBackbone
from lightning_genae.metrics.feature_set import score_feature_sets
from lightning_genae.metrics.names import metric_name, on_split

if TYPE_CHECKING:
    from lightning_genae.datamodules import ImageDataModule

# Images per block when a split's features are computed: a multiple of every backbone's chunk, so the
# backbone sees the same chunks as when given the whole split at once (and gives the same features).
REAL_FEATURE_BLOCK = 2048

__all__ = [
    "GenerativeScore",
    "RealFeatures",
    "comparison_size",
    "extract_features",
    "score_generated",
    "seeded_subset",
]


@torch.no_grad()
def extract_features(backbone: FeatureBackbone, images: Tensor, device: torch.device) -> Tensor:
    """Backbone features of uint8 images, in batches, on `device`; returned on the CPU."""
    # The backbone moves its own chunks to the device, so the whole split never sits there at once.
    return backbone.to(device)(images).cpu()


class RealFeatures:
    """Backbone features of a dataset split, computed once and cached on disk.

    Keyed by the split's content (its SHA-256) and the backbone's weights (the file's SHA-256, or for a
    backbone without a file its parameters'): replacing a folder's images in place, a dataset of the same
    name elsewhere, or another network computes them again instead of reusing another data's or network's
    features. A
    cache file that cannot be read is recomputed (with a one-line notice), never trusted.
    """

    def __init__(self, backbone: FeatureBackbone, cache_dir: Path | None = None) -> None:
        self.backbone = backbone
        self.cache_dir = (cache_dir or cache_root()) / "features"
        self._memory: dict[str, Tensor] = {}
        self._network_identity: str | None = None

    def key(self, datamodule: ImageDataModule, split: str) -> str:
        network = self.network_identity()
        identity = f"{datamodule.content_sha256(split)}|{split}|{self.backbone.name}|{network}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        # The name is for people reading the folder; the digest alone decides.
        return f"{datamodule.name}-{split}-{self.backbone.name}-{digest}"

    def network_identity(self) -> str:
        """The weights file's whole SHA-256 (a description names only its first 8 digits); for a backbone
        without one (built in Python, a stand-in), its class and the SHA-256 of its parameters and buffers:
        two networks under one description must not share features."""
        if self._network_identity is None:
            given = getattr(self.backbone, "weights_sha256", None)
            if given:
                self._network_identity = given
            else:
                digest = hashlib.sha256(type(self.backbone).__qualname__.encode())
                for name, tensor in sorted(self.backbone.state_dict().items()):
                    value = tensor.detach().cpu().contiguous()
                    digest.update(f"|{name}|{value.dtype}|{tuple(value.shape)}|".encode())
                    digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
                self._network_identity = f"state {digest.hexdigest()}"
        return self._network_identity

    def get(self, datamodule: ImageDataModule, split: str, device: torch.device) -> Tensor:
        images, _ = datamodule.split_tensors(split)
        key = self.key(datamodule, split)
        if key in self._memory:
            return self._memory[key]
        path = self.cache_dir / f"{key}.pt"
        features = self._read(path, len(images)) if path.is_file() else None
        if features is None:
            features = self._compute(datamodule.name, split, images, device)
            save_torch_atomically(path, features)
        self._memory[key] = features
        return features

    def _compute(self, name: str, split: str, images: Tensor, device: torch.device) -> Tensor:
        """Features of a whole split, in blocks, saying where it is when that takes a while."""
        blocks = images.split(REAL_FEATURE_BLOCK)
        progress = evaluation_progress(
            f"features of the {name} {split} split ({len(images)} images, {self.backbone.name}; "
            "computed once, then cached)",
            len(images),
            "image",
        )
        features = []
        for block in blocks:
            features.append(extract_features(self.backbone, block, device))
            progress.advance(len(block))
        return torch.cat(features) if features else extract_features(self.backbone, images, device)

    def _read(self, path: Path, count: int) -> Tensor | None:
        """The cached features at `path`, or None (with a notice) when they are unreadable or not `count`."""
        try:
            features = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - a damaged cache is recomputed, never trusted
            say(f"features: cached {path} is unreadable ({describe_error(error)}); computing them again")
            return None
        if not isinstance(features, Tensor) or features.dim() != 2 or len(features) != count:
            say(f"features: cached {path} does not hold {count} feature rows; computing them again")
            return None
        return features


def comparison_size(datamodule: ImageDataModule, split: str, num_samples: int) -> int:
    """N, the number of generated and of real images compared: num_samples, capped by the split's size."""
    return min(num_samples, len(datamodule.split_tensors(split)[0]))


# Which real images a split capped at N compares with: one fixed subset for every run and seed.
REAL_SUBSET_SEED = 0


def seeded_subset(count: int, n: int, seed: int) -> Tensor:
    """The same n of count indices for every run with this seed (all of them when n >= count)."""
    if n >= count:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n].sort().values


@dataclass(frozen=True)
class GenerativeScore:
    """Named generative metrics (`fd_classifier`, ... without split) and what they were computed on."""

    values: dict[str, float]
    split: str
    n_real: int
    n_fake: int
    backbone: str

    def logged(self) -> dict[str, float]:
        """The values under the names they are logged with, split first: `val/fd_classifier`, ..."""
        return {on_split(name, self.split): value for name, value in self.values.items()}

    def record(self) -> dict[str, Any]:
        """What summary.json and eval.json print beside the numbers: split, sample counts, backbone."""
        return {"split": self.split, "n_real": self.n_real, "n_fake": self.n_fake, "backbone": self.backbone}


def score_generated(
    real_features: RealFeatures,
    datamodule: ImageDataModule,
    split: str,
    fake_features: Callable[[int], Tensor],
    *,
    num_samples: int,
    device: torch.device,
) -> GenerativeScore:
    """N generated against N real images of `split`, N = min(num_samples, the split's size).

    `fake_features(n)` returns the features of n generated images; it is asked only once N is known, so a
    model generates no more than are compared. The real N are the same for every run, whatever its seed
    (`REAL_SUBSET_SEED`): runs and seeds are measured against one reference set, so the spread over seeds
    is the models', not the reference's.
    """
    backbone = real_features.backbone
    real_all = real_features.get(datamodule, split, device)
    n = comparison_size(datamodule, split, num_samples)
    real = real_all[seeded_subset(len(real_all), n, REAL_SUBSET_SEED)]
    fake = fake_features(n)
    values = score_feature_sets(real, fake)
    return GenerativeScore(
        values={metric_name(key, backbone.name): value for key, value in values.items()},
        split=split,
        n_real=int(len(real)),
        n_fake=int(len(fake)),
        backbone=backbone.description,
    )

"""Generated against real images: a split's features, seeded subsets, and `score_generated`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lightning_genae.cache import cache_root, save_torch_atomically, state_sha256
from lightning_genae.errors import describe_error
from lightning_genae.metrics.backbones import FeatureBackbone
from lightning_genae.metrics.feature_set import GenerativeScore, score_feature_sets
from lightning_genae.metrics.names import metric_name
from lightning_genae.progress import evaluation_progress, say

if TYPE_CHECKING:
    from lightning_genae.datamodules import ImageDataModule

# Images per block when a split's features are computed: a multiple of every backbone's chunk, so the
# backbone sees the same chunks as when given the whole prefix at once (and gives the same features).
REAL_FEATURE_BLOCK = 2048


@torch.no_grad()
def extract_features(backbone: FeatureBackbone, images: Tensor, device: torch.device) -> Tensor:
    """Backbone features of uint8 images, in batches, on `device`; returned on the CPU."""
    # The backbone moves its own chunks to the device, so the whole split never sits there at once.
    return backbone.to(device)(images).cpu()


class RealFeatures:
    """Backbone features of a split's images, cached on disk by the split's content and the backbone's
    weights: a prefix of one seeded order of the split (`reference_order`), grown when a larger N is asked."""

    def __init__(self, backbone: FeatureBackbone, cache_dir: Path | None = None) -> None:
        self.backbone = backbone
        self.cache_dir = (cache_dir or cache_root()) / "features"
        self._memory: dict[str, Tensor] = {}
        # The weights file's whole SHA-256; for a backbone without one (built in Python, a stand-in), that of
        # its parameters and buffers: two networks under one description must not share features.
        self.network = getattr(backbone, "weights_sha256", None) or (
            f"state {state_sha256(backbone, type(backbone).__qualname__)}"
        )

    def key(self, datamodule: ImageDataModule, split: str) -> str:
        """The cache file's name: a digest of split content, network and reference order, then plain parts."""
        identity = (
            f"{datamodule.content_sha256(split)}|{split}|{self.backbone.name}|{self.network}"
            f"|reference order {REAL_SUBSET_SEED} in whole chunks"
        )
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        return f"{datamodule.name}-{split}-{self.backbone.name}-{digest}"

    def get(self, datamodule: ImageDataModule, split: str, device: torch.device) -> Tensor:
        return self.reference(datamodule, split, datamodule.split_size(split), device)

    def reference(self, datamodule: ImageDataModule, split: str, n: int, device: torch.device) -> Tensor:
        """The split's reference features of n images: rows of `seeded_subset(size, n, REAL_SUBSET_SEED)`."""
        size = datamodule.split_size(split)
        order = reference_order(size)
        n = min(n, size)
        # Computed to a whole number of the backbone's chunks: each chunk then holds the same images
        # whatever sizes were asked before, and gives the same features to the last bit.
        chunk = getattr(self.backbone, "chunk_size", 1)
        wanted = min(size, -(-n // chunk) * chunk)
        key = self.key(datamodule, split)
        path = self.cache_dir / f"{key}.pt"
        known = self._memory.get(key)
        if known is None and path.is_file():
            known = self._read(path, order)
        if known is None:
            known = torch.empty(0, 0)
        if len(known) < wanted:
            more = self._compute(datamodule, split, order[len(known) : wanted], device)
            known = torch.cat([known, more]) if len(known) else more
            save_torch_atomically(path, {"indices": order[: len(known)].clone(), "features": known})
        self._memory[key] = known
        return known[:n][order[:n].argsort()]

    def _compute(
        self, datamodule: ImageDataModule, split: str, chosen: Tensor, device: torch.device
    ) -> Tensor:
        """Features of the split's images at `chosen`, read a block at a time and by index (`items_at`)."""
        count = datamodule.split_size(split)
        what = f"{count} images" if len(chosen) == count else f"{len(chosen)} of its {count} images"
        progress = evaluation_progress(
            f"features of the {datamodule.name} {split} split ({what}, {self.backbone.name}; cached)",
            len(chosen),
            "image",
        )
        features = []
        for block in chosen.split(REAL_FEATURE_BLOCK):
            features.append(extract_features(self.backbone, datamodule.items_at(split, block)[0], device))
            progress.advance(len(block))
        return torch.cat(features)

    def _read(self, path: Path, order: Tensor) -> Tensor | None:
        """The cached features at `path`, or None (with a notice) when they are unreadable, are not 1 to
        len(order) feature rows, or are not of the images `order` begins with."""
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - a damaged cache is recomputed, never trusted
            say(f"features: cached {path} is unreadable ({describe_error(error)}); computing them again")
            return None
        features, indices = (
            saved.get(key) if isinstance(saved, dict) else None for key in ("features", "indices")
        )
        if (
            not isinstance(features, Tensor)
            or not isinstance(indices, Tensor)
            or features.dim() != 2
            or not 0 < len(features) <= len(order)
            or not torch.equal(indices, order[: len(features)])
        ):
            # Another torch version may draw another reference permutation: its rows are other images.
            say(f"features: cached {path} is not of the split's reference images; computing them again")
            return None
        return features


def comparison_size(datamodule: ImageDataModule, split: str, num_samples: int) -> int:
    """N, the number of generated and of real images compared: num_samples, capped by the split's size."""
    return min(num_samples, datamodule.split_size(split))


# Which real images a split capped at N compares with: one fixed subset for every run and seed.
REAL_SUBSET_SEED = 0


def seeded_order(count: int, seed: int) -> Tensor:
    """One fixed order of count indices for each seed: its first n are `seeded_subset(count, n, seed)`."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))


def reference_order(count: int) -> Tensor:
    """The order whose first N images of a split are the real images every comparison of N uses."""
    return seeded_order(count, REAL_SUBSET_SEED)


def seeded_subset(count: int, n: int, seed: int) -> Tensor:
    """Sorted n of count indices, the same every run with this seed; a smaller n's are among a larger n's."""
    if n >= count:
        return torch.arange(count)
    return seeded_order(count, seed)[:n].sort().values


def score_generated(
    real_features: RealFeatures,
    datamodule: ImageDataModule,
    split: str,
    fake_features: Callable[[int], Tensor],
    *,
    num_samples: int,
    device: torch.device,
) -> GenerativeScore:
    """N generated against N real images of `split`, N = min(num_samples, the split's size); the real N are
    the same for every run and seed (`REAL_SUBSET_SEED`), so the spread over seeds is the models'."""
    backbone = real_features.backbone
    n = comparison_size(datamodule, split, num_samples)
    real = real_features.reference(datamodule, split, n, device)
    fake = fake_features(n)
    values = score_feature_sets(real, fake)
    return GenerativeScore(
        values={metric_name(key, backbone.name): value for key, value in values.items()},
        split=split,
        n_real=int(len(real)),
        n_fake=int(len(fake)),
        backbone=backbone.description,
    )

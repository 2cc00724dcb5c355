"""CelebA aligned faces at 64x64 with the official partition; JPEGs are decoded once and cached as uint8."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from datamodules.base import SPLITS, Batch, ImageDataModule
from datamodules.imagefiles import read_images
from lightning_genae.cache import write_atomically
from lightning_genae.errors import DataError, describe_error

IMAGE_SIZE = 64
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_FOLDER = "img_align_celeba"
CACHE_FILE = f"genae_cache_{IMAGE_SIZE}.npz"
PARTITIONS = {"0": "train", "1": "val", "2": "test"}


def read_partition(path: Path) -> dict[str, list[str]]:
    """Image names per split from `list_eval_partition.txt` (lines `000001.jpg 0`; 0/1/2 = train/val/test)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path} cannot be read ({describe_error(exc)}): delete it to re-download, or replace it"
        ) from exc
    names: dict[str, list[str]] = {split: [] for split in SPLITS}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in PARTITIONS:
            raise DataError(
                f"{path} line {number} reads {line.strip()!r}, expected '<image>.jpg <0|1|2>': "
                "delete it to re-download, or replace it"
            )
        names[PARTITIONS[fields[1]]].append(fields[0])
    return names


class CelebADataModule(ImageDataModule):
    """CelebA: official train/val/test partition, unlabeled; 178x218 faces are centre-cropped to 178x178."""

    name = "celeba"
    default_shape = (3, IMAGE_SIZE, IMAGE_SIZE)
    classes = None

    @property
    def celeba_dir(self) -> Path:
        return self.data_dir / "celeba"

    @property
    def cache_path(self) -> Path:
        return self.celeba_dir / CACHE_FILE

    def _has_sources(self) -> bool:
        return (self.celeba_dir / PARTITION_FILE).is_file() and (self.celeba_dir / IMAGE_FOLDER).is_dir()

    def _not_found(self, reason: str) -> DataError:
        return DataError(
            f"CelebA not found in {self.celeba_dir} {reason}: put {IMAGE_FOLDER}/ (unzipped) and "
            f"{PARTITION_FILE} there, or pass --data-dir pointing at a folder holding celeba/"
        )

    def prepare_data(self) -> None:
        """Download via torchvision (needs gdown) unless the images or the cache exist; then build the cache.

        Decoding here runs once per node; in `setup` every DDP rank would decode 200k JPEGs itself.
        """
        # Existence only: reading 2.4 GB to validate it is left to setup, which rebuilds a stale cache.
        if self.cache_path.is_file():
            return
        if not self._has_sources():
            from torchvision import datasets

            self._download(
                lambda: datasets.CelebA(root=str(self.data_dir), split="all", download=True),
                lambda: [] if self._has_sources() else ["img_align_celeba/ or list_eval_partition.txt"],
            )
        self._build_cache()

    def _read_cache(self) -> dict[str, np.ndarray] | None:
        """The cached splits, or None when there is no cache or it no longer matches the partition file."""
        if not self.cache_path.is_file():
            return None
        try:
            with np.load(self.cache_path) as cache:
                arrays = {split: cache[split] for split in SPLITS}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(
                f"{self.cache_path} is corrupt ({describe_error(exc)}): "
                "delete it, it is rebuilt from the JPEGs"
            ) from exc
        if any(array.dtype != np.uint8 or array.shape[1:] != self.default_shape for array in arrays.values()):
            raise DataError(
                f"{self.cache_path} holds arrays of the wrong shape: delete it, it is rebuilt from the JPEGs"
            )
        partition = self.celeba_dir / PARTITION_FILE
        if partition.is_file():
            # Sizes are the cheap staleness check: a changed partition file means the cache is out of date.
            names = read_partition(partition)
            if any(len(arrays[split]) != len(names[split]) for split in SPLITS):
                return None
        return arrays

    def _build_cache(self) -> dict[str, np.ndarray]:
        """Decode every listed JPEG and write the cache atomically (a crash never leaves half a cache)."""
        if not self._has_sources():
            raise self._not_found("(call prepare_data() to download it)")
        names = read_partition(self.celeba_dir / PARTITION_FILE)
        arrays = {}
        for split in SPLITS:
            paths = [self.celeba_dir / IMAGE_FOLDER / name for name in names[split]]
            if missing := [path for path in paths if not path.is_file()]:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise DataError(
                    f"{missing[0]}{more} listed in {PARTITION_FILE} is missing: "
                    f"re-extract img_align_celeba.zip into {self.celeba_dir}"
                )
            arrays[split] = read_images(paths, IMAGE_SIZE, channels=3).numpy()
        try:
            # Through an open file: np.savez given a name would append ".npz" to the temporary's name.
            write_atomically(self.cache_path, lambda temporary: _save_npz(temporary, arrays))
        except OSError as exc:
            warnings.warn(
                f"could not write the CelebA cache {self.cache_path} ({describe_error(exc)}); "
                "the JPEGs will be decoded again next run",
                stacklevel=2,
            )
        return arrays

    def _load_splits(self) -> dict[str, Batch]:
        arrays = self._read_cache()
        if arrays is None:
            arrays = self._build_cache()
        return {
            split: (torch.from_numpy(array), torch.full((len(array),), -1, dtype=torch.long))
            for split, array in arrays.items()
        }


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as file:
        np.savez(file, **arrays)

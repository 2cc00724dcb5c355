"""MNIST and Fashion-MNIST read straight from their IDX files (gzipped or not); torchvision only downloads."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from lightning_genae.datamodules.base import Batch, ImageDataModule
from lightning_genae.datamodules.splits import carve_validation
from lightning_genae.errors import DataError, describe_error

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_idx_file(raw_dir: Path, name: str) -> Path | None:
    """`raw_dir/name`, else `raw_dir/name.gz`, else None."""
    return next((path for path in (raw_dir / name, raw_dir / f"{name}.gz") if path.is_file()), None)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """One IDX file as a uint8 array; the header is big-endian int32s: magic number, then each dimension."""
    header = 4 * (1 + (magic & 0xFF))
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
            data = file.read()
        found, *dims = struct.unpack(f">{header // 4}i", data[:header])
        problem = None
        if found != magic or min(dims) < 0 or len(data) != header + math.prod(dims):
            problem = f"magic number {found}, shape {tuple(dims)} and {len(data) - header} data bytes"
    except (OSError, EOFError, zlib.error, struct.error, ValueError) as exc:
        problem = describe_error(exc)
    if problem is not None:
        raise DataError(
            f"{path} cannot be read as an IDX file with magic number {magic} ({problem}): delete it to "
            "re-download, or replace it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


class MNISTDataModule(ImageDataModule):
    """MNIST: the official 10,000 test images; a fixed stratified 5,000 of the 60,000 train for validation."""

    name = "mnist"
    default_shape = (1, 28, 28)
    classes = 10
    # Folder under data_dir, as torchvision names it and the torchvision class that downloads it.
    folder = "MNIST"

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / self.folder / "raw"

    def _missing(self) -> list[str]:
        names = [name for pair in IDX_FILES.values() for name in pair]
        return [name for name in names if find_idx_file(self.raw_dir, name) is None]

    def _not_found(self, reason: str) -> DataError:
        missing = self._missing()
        return DataError(
            f"{self.folder} not found in {self.raw_dir} (missing {', '.join(missing)}) {reason}: put those "
            f"IDX files [.gz] there, or give data_dir a folder holding {self.folder}/raw"
        )

    def prepare_data(self) -> None:
        """Download with torchvision unless all four IDX files (gzipped or not) are already there."""
        if self._missing():
            self._download(self.folder, train=True)

    def _load_splits(self) -> dict[str, Batch]:
        official = {}
        for split, (image_name, label_name) in IDX_FILES.items():
            image_path = find_idx_file(self.raw_dir, image_name)
            label_path = find_idx_file(self.raw_dir, label_name)
            images = read_idx(image_path, IDX_IMAGES_MAGIC)
            labels = read_idx(label_path, IDX_LABELS_MAGIC)
            # Their shapes and class ids are checked with every image dataset's (`checked_image_split`).
            if len(images) != len(labels):
                raise DataError(f"{image_path}, {label_path}: {len(images)} images, {len(labels)} labels")
            official[split] = (torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long())
        return {**carve_validation(*official["train"]), "test": official["test"]}


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: same format and split rules as MNIST, harder images."""

    name = "fashion_mnist"
    folder = "FashionMNIST"

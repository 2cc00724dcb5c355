"""MNIST and Fashion-MNIST read straight from their IDX files (gzipped or not); torchvision only downloads."""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from lightning_genae.datamodules.base import Batch, ImageDataModule
from lightning_genae.datamodules.splits import carve_validation
from lightning_genae.errors import DataError, agree, describe_error

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_idx_file(raw_dir: Path, name: str) -> Path | None:
    """`raw_dir/name`, else `raw_dir/name.gz`, else None."""
    for candidate in (raw_dir / name, raw_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """One IDX file as a uint8 array; the header is big-endian int32s: magic number, then each dimension."""

    def unreadable(reason: str) -> DataError:
        return DataError(
            f"{path} cannot be read as an IDX file ({reason}): delete it to re-download, or replace it"
        )

    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise unreadable(describe_error(exc)) from exc
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise unreadable(f"only {len(data)} bytes, shorter than its header")
    found, *dims = struct.unpack(f">{1 + ndim}i", data[:header])
    if found != magic:
        raise unreadable(f"magic number {found}, expected {magic}")
    if any(size < 0 for size in dims):
        raise unreadable(f"a negative size in its shape {tuple(dims)}")
    if len(data) != header + math.prod(dims):
        raise unreadable(
            f"{len(data) - header} data bytes, expected {math.prod(dims)} for shape {tuple(dims)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


# The start of torchvision's download error ("Error downloading train-images-idx3-ubyte.gz: <cause>").
_DOWNLOADING_A_FILE = re.compile(r"RuntimeError: Error downloading \S+: ")


class MNISTDataModule(ImageDataModule):
    """MNIST: the official 10,000 test images; a fixed stratified 5,000 of the 60,000 train for validation."""

    name = "mnist"
    default_shape = (1, 28, 28)
    classes = 10
    # Folder under data_dir, as torchvision names it, and the torchvision class that downloads it.
    folder = "MNIST"

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / self.folder / "raw"

    def _missing(self) -> list[str]:
        names = [name for pair in IDX_FILES.values() for name in pair]
        return [name for name in names if find_idx_file(self.raw_dir, name) is None]

    def _files_in_data_dir_itself(self) -> DataError | None:
        """The error for a data_dir that holds the IDX files itself (the raw folder named, a common slip)
        or in a raw folder of its own (the dataset's folder named: DATA/MNIST, where torchvision would look
        in, and download into, DATA/MNIST/MNIST/raw), found before any download; None otherwise."""
        names = [name for pair in IDX_FILES.values() for name in pair]
        raw_inside = self.data_dir / "raw"
        holder = next(
            (
                folder
                for folder in (raw_inside, self.data_dir)
                if all(find_idx_file(folder, name) is not None for name in names)
            ),
            None,
        )
        if holder is None:
            return None
        inside = holder.resolve()
        # The folder a raw folder lies in: the dataset's own, by torchvision's layout.
        dataset_folder = inside.parent if inside.name == "raw" else None
        # MNIST's and Fashion-MNIST's files have the same names: a folder's own name says whose they are. A
        # raw folder named itself is read so by any name; one inside the folder given, by a dataset's name.
        other_datasets = {MNISTDataModule.folder, FashionMNISTDataModule.folder} - {self.folder}
        if dataset_folder is not None and dataset_folder.name == self.folder:
            fix = f"give data_dir {dataset_folder.parent}, the folder holding {self.folder}/raw"
        elif dataset_folder is not None and (
            dataset_folder.name in other_datasets if holder is raw_inside else dataset_folder.name
        ):
            return DataError(
                f"{self.folder} not found in {self.raw_dir}; {holder} holds IDX files of "
                f"{dataset_folder.name}, not of {self.folder}: give data_dir a folder holding "
                f"{self.folder}/raw"
            )
        else:
            fix = f"if they are {self.folder}'s, move them into {self.raw_dir}, or pass the folder holding it"
        return DataError(f"{self.folder} not found in {self.raw_dir}, but its files are in {holder}: {fix}")

    def _not_found(self, reason: str) -> DataError:
        # Name the files that are missing: torchvision re-downloads all four, so its error names the
        # first of them even when only a labels file is absent.
        missing = self._missing()
        all_files = len(missing) == sum(len(pair) for pair in IDX_FILES.values())
        if missing and not all_files:
            # torchvision's download error names the file it fetched first, which need not be one missing
            # here (a present file whose gzip differs from its checksum is fetched again): the cause alone.
            reason = _DOWNLOADING_A_FILE.sub("", reason).replace("and it cannot", "which cannot", 1)
            names = [f"{name}[.gz]" for name in missing]
            listed = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
            return DataError(
                f"{self.folder} in {self.raw_dir} lacks {listed}, {reason}: put "
                f"{agree(missing, 'that file', 'those files')} there, "
                f"or give data_dir a folder holding a complete {self.folder}/raw"
            )
        misplaced = self._files_in_data_dir_itself()
        if misplaced is not None:
            return misplaced
        return DataError(
            f"{self.folder} not found in {self.raw_dir} {reason}: "
            "put train-images-idx3-ubyte[.gz] etc. there, "
            f"or give data_dir a folder holding {self.folder}/raw"
        )

    def prepare_data(self) -> None:
        """Download with torchvision unless all four IDX files (gzipped or not) are already there."""
        if not self._missing():
            return
        misplaced = self._files_in_data_dir_itself()
        if misplaced is not None:
            raise misplaced
        from torchvision import datasets

        self._download(
            lambda: getattr(datasets, self.folder)(root=str(self.data_dir), train=True, download=True),
            self._missing,
        )

    def _load_splits(self) -> dict[str, Batch]:
        official = {}
        for split, (image_name, label_name) in IDX_FILES.items():
            image_path = find_idx_file(self.raw_dir, image_name)
            label_path = find_idx_file(self.raw_dir, label_name)
            if image_path is None or label_path is None:
                raise self._not_found("(call prepare_data() to download the dataset)")
            images = read_idx(image_path, IDX_IMAGES_MAGIC)
            labels = read_idx(label_path, IDX_LABELS_MAGIC)
            bad_shape = images.shape[1:] != self.default_shape[1:] or len(images) != len(labels)
            if bad_shape or len(labels) == 0 or labels.max(initial=0) > 9:
                raise DataError(
                    f"{image_path} and {label_path} do not form a {self.folder} split "
                    f"({len(images)} images of {images.shape[1:]}, {len(labels)} labels "
                    f"up to {labels.max(initial=0)}): replace them"
                )
            official[split] = (torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long())
        train_images, train_labels = official["train"]
        train, val = carve_validation(train_labels)
        return {
            "train": (train_images[train], train_labels[train]),
            "val": (train_images[val], train_labels[val]),
            "test": official["test"],
        }


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: same format and split rules as MNIST, harder images."""

    name = "fashion_mnist"
    folder = "FashionMNIST"

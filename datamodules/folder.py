"""Any folder of images, searched recursively; two or more image-holding subfolders become class labels."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lightning_genae.datamodules.base import Batch, ImageDataModule
from lightning_genae.datamodules.imagefiles import IMAGE_EXTENSIONS, read_images
from lightning_genae.datamodules.splits import split_items
from lightning_genae.errors import DataError, OptionError, agree

VAL_FRACTION = 0.05
TEST_FRACTION = 0.10
# Images decoded at once in a pass over a folder that is not held: 393 MB at 256x256 RGB.
DECODE_BLOCK = 2000


@dataclass(frozen=True)
class FolderScan:
    """Image files in a stable (sorted) order, their labels (-1 if unlabeled) and the class names."""

    paths: list[Path]
    labels: Tensor
    classes: list[str]
    # Images loose in the root beside two or more image subfolders, which then are not classes.
    loose: list[Path]


def _image_files(root: Path) -> Iterator[Path]:
    """Image files under `root`, relative to it, hidden ones left out. A folder linked in from outside `root`
    is read (`ln -s` assembles a class folder); a link inside `root` or back up the tree is not followed."""
    real_root = os.path.realpath(root)
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real_folder = os.path.realpath(folder)
        kept = []
        for name in sorted(subfolders):
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            inside = os.path.commonpath([real, real_root]) == real_root
            loop = os.path.commonpath([real, real_folder]) == real
            if not name.startswith(".") and not (os.path.islink(path) and (inside or loop)):
                kept.append(name)
        subfolders[:] = kept
        for name in files:
            path = Path(folder) / name
            if not name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                yield path.relative_to(root)


def scan_folder(root: Path) -> FolderScan:
    """Find images under `root`. Labels come from the top-level subfolders only when at least two of them
    hold images and no image sits loose in `root` itself; otherwise every image is unlabeled."""
    if not root.is_dir():
        raise DataError(f"image folder {root} is a file or does not exist; give a folder of images")
    relative = sorted(_image_files(root))
    subfolders = sorted({path.parts[0] for path in relative if len(path.parts) > 1})
    labelled = len(subfolders) >= 2 and all(len(path.parts) > 1 for path in relative)
    classes = subfolders if labelled else []
    class_ids = {name: index for index, name in enumerate(classes)}
    labels = [class_ids.get(path.parts[0], -1) if labelled else -1 for path in relative]
    loose = [root / path for path in relative if len(path.parts) == 1] if len(subfolders) >= 2 else []
    return FolderScan(
        [root / path for path in relative], torch.tensor(labels, dtype=torch.long), classes, loose
    )


class ImageFolderDataModule(ImageDataModule):
    """A user's image folder at --image-size/--channels; fixed 5% val / 10% test, stratified if labelled."""

    name = "folder"
    default_shape = (3, 64, 64)

    def _check_geometry(self, image_size: int | None, channels: int | None) -> None:
        if channels not in (None, 1, 3):
            raise OptionError("channels", f"{channels} is not supported; use 1 (grayscale) or 3 (RGB)")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        default_c, default_size, _ = self.default_shape
        size = self.hparams.image_size or default_size
        return (self.hparams.channels or default_c, size, size)

    @property
    def num_classes(self) -> int | None:
        return len(self.scan.classes) or None

    def labelling_advice(self) -> str:
        scan = self.scan
        root = Path(self.data_dir)
        parts = [path.relative_to(root).parts for path in scan.paths]
        tops = {part[0] for part in parts}
        nested = {part[1] for part in parts if len(part) > 2}
        if not scan.loose and len(tops) == 1 and len(nested) >= 2:
            # root/animals/{cat,dog}/...: the classes sit one level down.
            inner = root / tops.pop()
            return f"its class subfolders are one level down: give data_dir {inner}, or "
        if not scan.loose:
            return "sort the images into one subfolder per class, or "
        return (
            f"{len(scan.loose)} {agree(scan.loose, 'image lies', 'images lie')} loose in {self.data_dir} "
            f"(such as {scan.loose[0].name}): move {agree(scan.loose, 'it', 'them')} into a subfolder, or "
        )

    def summary(self) -> str:
        scan = self.scan
        classes = scan.classes
        if scan.loose:
            return (
                f"{super().summary()}, unlabelled: {len(scan.loose)} "
                f"{agree(scan.loose, 'image lies', 'images lie')} loose beside its class subfolders (such as "
                f"{scan.loose[0].name})"
            )
        if not classes:
            return super().summary()
        shown = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        return f"{super().summary()}, {len(classes)} classes from subfolders ({shown})"

    @functools.cached_property
    def scan(self) -> FolderScan:
        """The folder's images and labels, found once."""
        return scan_folder(self.data_dir)

    @functools.cached_property
    def _split_index(self) -> dict[str, Batch]:
        """Each split's (file indices, labels), from the labels alone."""
        total = len(self.scan.paths)
        if total < 3:
            raise DataError(
                f"{total} images ({' '.join(sorted(IMAGE_EXTENSIONS))}) under {self.data_dir}; need at least "
                "3, one per split: add some"
            )
        return split_items(torch.arange(total), self.scan.labels, VAL_FRACTION, TEST_FRACTION)

    def _load_splits(self) -> dict[str, Batch]:
        channels, size, _ = self.image_shape
        images = read_images(self.scan.paths, size, channels)
        return {split: (images[index], labels) for split, (index, labels) in self._split_index.items()}

    def split_size(self, split: str) -> int:
        if self._read_alone(split):
            return len(self._split_index[split][0])
        return super().split_size(split)

    def split_batches(self, split: str) -> Iterator[Batch]:
        """Where the folder is not held, the split decoded DECODE_BLOCK images at a time (`genae prepare`)."""
        if not self._read_alone(split):
            yield from super().split_batches(split)
            return
        channels, size, _ = self.image_shape
        index, labels = self._split_index[split]
        for start in range(0, len(index), DECODE_BLOCK):
            paths = [self.scan.paths[item] for item in index[start : start + DECODE_BLOCK].tolist()]
            yield read_images(paths, size, channels), labels[start : start + DECODE_BLOCK]

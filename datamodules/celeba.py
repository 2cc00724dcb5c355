"""CelebA aligned faces at 64x64, official partition, framed as the VAE-GAN reference code frames them
(andersbll/autoencoding_beyond_pixels), decoded once into a uint8 cache keyed by the sources' content; a file
beside the cache vouches for that content under the files' sizes and modification and change times (as git's
index does), so that 200k files are not read at every start."""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import PIL
import torch

from lightning_genae.cache import write_atomically, write_file_atomically
from lightning_genae.datamodules.base import SPLITS, Batch, ImageDataModule
from lightning_genae.datamodules.imagefiles import read_images
from lightning_genae.errors import DataError, describe_error
from lightning_genae.progress import say

IMAGE_SIZE = 64
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_FOLDER = "img_align_celeba"
CACHE_FILE = f"genae_cache_{IMAGE_SIZE}.npz"
# Beside the cache: the sizes and times under which its sources' content was last hashed.
SOURCES_FILE = f"genae_cache_{IMAGE_SIZE}.sources.json"
# In the cache: the SHA-256 of the files it was decoded from.
SOURCES_KEY = "sources_sha256"
PARTITIONS = {"0": "train", "1": "val", "2": "test"}
# The face's square in the 178x218 aligned images, (left, top, right, bottom): the VAE-GAN reference code's
# bbox (40, 218 - 30, 15, 178 - 15), given there as (top, bottom, left, right).
FACE_BOX = (15, 40, 163, 188)
# How the cached pixels were made from the JPEGs, part of the cache's key.
DECODING = f"{IMAGE_SIZE}x{IMAGE_SIZE} from the crop {FACE_BOX}, PIL bilinear, Pillow {PIL.__version__}"


def read_partition(path: Path) -> dict[str, list[str]]:
    """Image names per split from `list_eval_partition.txt` (lines `000001.jpg 0`; 0/1/2 = train/val/test)."""
    names: dict[str, list[str]] = {split: [] for split in SPLITS}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
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
    """CelebA: official partition, unlabeled; each image's 148x148 face square (`FACE_BOX`) at 64x64."""

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

    def _missing(self) -> list[str]:
        return [] if self.cache_path.is_file() or self._has_sources() else [IMAGE_FOLDER, PARTITION_FILE]

    def _not_found(self, reason: str) -> DataError:
        return DataError(
            f"CelebA not found in {self.celeba_dir} {reason}: put {IMAGE_FOLDER}/ (unzipped) and "
            f"{PARTITION_FILE} there, or give data_dir a folder holding celeba/"
        )

    def prepare_data(self) -> None:
        """Download (needs gdown) unless the images or the cache exist, then build the cache once per node."""
        if self._cache_is_current():
            return
        if not self._has_sources():
            self._download("CelebA", split="all")
        self._build_cache()

    def _sources(self) -> list[Path]:
        """The files the cache is decoded from, in order: the partition file, then every listed JPEG."""
        names = read_partition(self.celeba_dir / PARTITION_FILE)
        images = [self.celeba_dir / IMAGE_FOLDER / name for split in SPLITS for name in names[split]]
        return [self.celeba_dir / PARTITION_FILE, *images]

    def _open_cache(self, *keys: str) -> dict[str, np.ndarray]:
        """The cache's arrays named `keys` (the sources' SHA-256 is read without loading the images)."""
        try:
            with np.load(self.cache_path) as cache:
                return {key: cache[key] for key in keys}
        # A damaged archive (an .npy in its place, a key missing) fails in many ways; all mean the same.
        except Exception as exc:  # noqa: BLE001
            fix = "delete it, it is rebuilt from the JPEGs"
            raise DataError(f"{self.cache_path} is corrupt ({describe_error(exc)}): {fix}") from exc

    def _cache_is_current(self) -> bool:
        """Whether the cache exists and was decoded from the files the folder holds now, by content (vouched
        for while sizes and times stay); without the sources (JPEGs deleted) the cache is all there is."""
        if not self.cache_path.is_file():
            return False
        if not self._has_sources():
            return True
        built_from = self._open_cache(SOURCES_KEY)[SOURCES_KEY].tobytes().decode(errors="replace")
        sources = self._sources()
        try:
            stats = _stat_fingerprint(sources)
        except FileNotFoundError:
            return False  # decoding again names the missing file
        if self._vouched_content(stats) == built_from:
            return True
        content = _content_sha256(sources)
        if content != built_from:
            say(
                f"celeba: {self.cache_path} was decoded from other files, or framed or decoded otherwise "
                f"({built_from[:12]}, not {content[:12]}); decoding the JPEGs of {self.celeba_dir} again"
            )
            return False
        self._vouch(stats, content)
        return True

    def _vouched_content(self, stats: str) -> str | None:
        """The content SHA-256 the sources file vouches for under `stats`, or None."""
        try:
            record = json.loads((self.celeba_dir / SOURCES_FILE).read_text())
            return record[SOURCES_KEY] if record["stats"] == stats else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _vouch(self, stats: str, content: str) -> None:
        record = json.dumps({"stats": stats, SOURCES_KEY: content})
        # In a read-only folder the content is hashed again next run; nothing is wrong.
        with contextlib.suppress(OSError):
            write_file_atomically(self.celeba_dir / SOURCES_FILE, record)

    def _build_cache(self) -> dict[str, np.ndarray]:
        """Decode every listed JPEG and write the cache atomically."""
        names = read_partition(self.celeba_dir / PARTITION_FILE)
        arrays = {
            split: read_images(
                [self.celeba_dir / IMAGE_FOLDER / name for name in names[split]], IMAGE_SIZE, 3, box=FACE_BOX
            ).numpy()
            for split in SPLITS
        }
        sources = self._sources()
        stats, content = _stat_fingerprint(sources), _content_sha256(sources)
        key = {SOURCES_KEY: np.frombuffer(content.encode(), dtype=np.uint8)}
        try:
            # Through an open file: np.savez given a name would append ".npz" to the temporary's name.
            write_atomically(self.cache_path, lambda temporary: _save_npz(temporary, {**arrays, **key}))
            self._vouch(stats, content)
        except OSError as exc:
            warnings.warn(
                f"could not write the CelebA cache {self.cache_path} ({describe_error(exc)})", stacklevel=2
            )
        return arrays

    def _load_splits(self) -> dict[str, Batch]:
        arrays = self._open_cache(*SPLITS) if self._cache_is_current() else self._build_cache()
        return {
            split: (torch.from_numpy(array), torch.full((len(array),), -1, dtype=torch.long))
            for split, array in arrays.items()
        }


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def _stat_fingerprint(paths: list[Path]) -> str:
    """SHA-256 of the decoding and of every file's name, size, modification and change times."""
    digest = hashlib.sha256(f"{DECODING}\n".encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.name}\t{stat.st_size}\t{stat.st_mtime_ns}\t{stat.st_ctime_ns}\n".encode())
    return digest.hexdigest()


def _content_sha256(paths: list[Path]) -> str:
    """SHA-256 of how it decodes (`DECODING`) and each file's name and bytes, in order."""
    digest = hashlib.sha256(f"{DECODING}\n".encode())
    for path in paths:
        digest.update(f"{path.name}\t{path.stat().st_size}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()

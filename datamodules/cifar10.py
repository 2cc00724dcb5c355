"""CIFAR-10 read from its python pickle batches; torchvision only downloads (its reader insists on MD5s).
An ordinary unpickler would run any callable a planted file names: ours resolves only the format's globals."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_genae.datamodules.base import Batch, ImageDataModule
from lightning_genae.datamodules.splits import carve_validation
from lightning_genae.errors import DataError, describe_error

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


def _reconstruct() -> Callable[..., Any]:
    """numpy's array reconstructor (numpy._core from numpy 2, numpy.core before)."""
    try:
        from numpy._core.multiarray import _reconstruct as found
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct as found  # type: ignore[no-redef]
    return found


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol-2 pickles of Python 3 bytes use it: latin-1 text to bytes, whatever
    encoding the file names (a codec lookup would import the module the name selects)."""
    return str(text).encode("latin1")


# Every global a CIFAR-10 python batch refers to: the official files' (Python 2, numpy 1), numpy 2's
# _reconstruct, and the _codecs.encode by which Python 3 stores bytes at protocol 2.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class ForeignPickle(pickle.UnpicklingError):
    """A pickle that names a global no CIFAR-10 batch names (its message): what it asks to run, never run."""


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of _ALLOWED_GLOBALS."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise ForeignPickle(f"{module}.{name}")
        return allowed


def read_cifar_batch(path: Path) -> Batch:
    """One pickle batch: b"data" is (N, 3072) uint8 in channel-major order, b"labels" N ints in 0..9."""
    unreadable = "cannot be read as a CIFAR-10 batch ({}): delete it to re-download, or replace it"
    try:
        with path.open("rb") as file:
            batch = _CifarUnpickler(file, encoding="bytes").load()
        # Read as they are, never cast: a cast would wrap 300 to 44, floats in [0, 1] to black and a
        # label 1.7 to 1, and the run would train on them.
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
        as_stored = data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3 * 32 * 32
        ids = labels.dtype.kind in "iu" and len(labels) == len(data) > 0
        problem = None
        if not (as_stored and ids and 0 <= labels.min() <= labels.max() <= 9):
            problem = unreadable.format(
                f"pixels of type {data.dtype} and shape {data.shape}, labels of type {labels.dtype} and "
                f"shape {labels.shape}, where a batch holds uint8 [N, 3072] and N labels 0..9"
            )
    except ForeignPickle as exc:
        problem = f"is not a CIFAR-10 batch: it asks to run {exc}; delete it and re-download"
    # A damaged pickle can fail in many ways (a length byte changed asks for terabytes: MemoryError); all of
    # them mean the same thing to the user. Code it asks to run was refused above, before anything ran.
    except Exception as exc:  # noqa: BLE001
        problem = unreadable.format(describe_error(exc))
    if problem is not None:
        raise DataError(f"{path} {problem}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels.astype(np.int64))


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10: official 10,000 test images; a fixed stratified 5,000 of the 50,000 train for validation."""

    name = "cifar10"
    default_shape = (3, 32, 32)
    classes = 10

    @property
    def batches_dir(self) -> Path:
        return self.data_dir / "cifar-10-batches-py"

    def _missing(self) -> list[str]:
        return [name for name in (*TRAIN_BATCHES, TEST_BATCH) if not (self.batches_dir / name).is_file()]

    def _not_found(self, reason: str) -> DataError:
        missing = ", ".join(self._missing())
        return DataError(
            f"CIFAR-10 not found in {self.batches_dir} (missing {missing}) {reason}: extract cifar-10-python"
            f".tar.gz into {self.data_dir}, or give data_dir a folder holding cifar-10-batches-py"
        )

    def prepare_data(self) -> None:
        """Download with torchvision unless all six batch files are already there."""
        if self._missing():
            self._download("CIFAR10", train=True)

    def _load_splits(self) -> dict[str, Batch]:
        parts = [read_cifar_batch(self.batches_dir / name) for name in TRAIN_BATCHES]
        train = carve_validation(
            torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts])
        )
        return {**train, "test": read_cifar_batch(self.batches_dir / TEST_BATCH)}

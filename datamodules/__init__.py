"""Datasets by name, each with fixed val/test splits, each DataModule imported on first use (for `--help`)."""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_genae.datamodules.options import CSVSeriesOptions, ImageOptions, SinesOptions
from lightning_genae.errors import refuse_unread
from lightning_genae.lazy import lazy_dir, lazy_getattr
from lightning_genae.plugin_options import PluginOptions, Registry, import_location, option_specs

if TYPE_CHECKING:
    # The names served lazily below, for type checkers, which do not run __getattr__.
    from lightning_genae.datamodules.base import (  # noqa: F401
        DataKind,
        ImageDataModule,
        InMemoryDataModule,
        TensorImageDataModule,
    )
    from lightning_genae.datamodules.binarized_mnist import BinarizedMNISTDataModule  # noqa: F401
    from lightning_genae.datamodules.celeba import CelebADataModule  # noqa: F401
    from lightning_genae.datamodules.cifar10 import CIFAR10DataModule  # noqa: F401
    from lightning_genae.datamodules.csvseries import CSVSeriesDataModule  # noqa: F401
    from lightning_genae.datamodules.digits import DigitsDataModule  # noqa: F401
    from lightning_genae.datamodules.folder import ImageFolderDataModule  # noqa: F401
    from lightning_genae.datamodules.mnist import FashionMNISTDataModule, MNISTDataModule  # noqa: F401
    from lightning_genae.datamodules.pixels import to_model_range, to_uint8  # noqa: F401
    from lightning_genae.datamodules.sines import SinesDataModule  # noqa: F401
    from lightning_genae.datamodules.smnist import SequentialMNISTDataModule  # noqa: F401
    from lightning_genae.datamodules.timegan_sines import TimeGANSinesDataModule  # noqa: F401


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its DataModule (`module:Class`) and what is known of it without importing it."""

    location: str
    description: str
    data_kind: DataKind = "image"
    options: type[PluginOptions] | None = None
    binary_pixels: bool = False
    reads_every_image: bool = False

    def __post_init__(self) -> None:
        if self.options is None:
            object.__setattr__(self, "options", ImageOptions if self.data_kind == "image" else PluginOptions)

    @property
    def module(self) -> type[InMemoryDataModule]:
        """The DataModule class, imported now (which imports Lightning)."""
        from lightning_genae.datamodules.base import InMemoryDataModule

        return import_location(self.location, "lightning_genae.datamodules", InMemoryDataModule, "a dataset")


DATASETS: Registry[DatasetSpec] = Registry(
    "data",
    {
        "digits": DatasetSpec(
            ".digits:DigitsDataModule",
            "scikit-learn's 1797 handwritten digits, upscaled to 16x16 grayscale (bundled, no download)",
        ),
        "mnist": DatasetSpec(
            ".mnist:MNISTDataModule",
            "MNIST handwritten digits, 28x28 grayscale (downloaded by torchvision into DATA_DIR/MNIST/raw)",
        ),
        "binarized_mnist": DatasetSpec(
            ".binarized_mnist:BinarizedMNISTDataModule",
            "MNIST with binary pixels, Bernoulli(intensity): training images sampled anew at every draw, "
            "val/test binarized once from a fixed seed (the likelihood benchmark; read like mnist)",
            binary_pixels=True,
        ),
        "fashion_mnist": DatasetSpec(
            ".mnist:FashionMNISTDataModule",
            "Fashion-MNIST clothing, 28x28 grayscale (downloaded by torchvision into "
            "DATA_DIR/FashionMNIST/raw)",
        ),
        "cifar10": DatasetSpec(
            ".cifar10:CIFAR10DataModule",
            "CIFAR-10 natural images, 32x32 RGB (downloaded by torchvision into "
            "DATA_DIR/cifar-10-batches-py)",
        ),
        "celeba": DatasetSpec(
            ".celeba:CelebADataModule",
            "CelebA aligned faces, the VAE-GAN reference code's face square resized to 64x64 RGB, unlabeled "
            "(decoded once, then cached)",
        ),
        "folder": DatasetSpec(
            ".folder:ImageFolderDataModule",
            "any folder of images given by --data-dir (recursive; >=2 subfolders become class labels), "
            "at --image-size (64) and --channels (3)",
            reads_every_image=True,
        ),
        "sines": DatasetSpec(
            ".sines:SinesDataModule",
            "synthetic noisy sine waves (random frequency, phase, amplitude, noise), --seq-len 24 steps, "
            "--channels 1 (generated, no files)",
            data_kind="sequence",
            options=SinesOptions,
        ),
        "timegan_sines": DatasetSpec(
            ".timegan_sines:TimeGANSinesDataModule",
            "TimeGAN's Sines benchmark: 10,000 series of 24 steps x 5 channels, sin(f t + phase) with f, "
            "phase ~ U(0, 0.1), scaled to [0, 1] (generated, no files)",
            data_kind="sequence",
        ),
        "smnist": DatasetSpec(
            ".smnist:SequentialMNISTDataModule",
            "MNIST digits as sequences: 28 rows of 28 pixels (read from DATA_DIR/MNIST/raw like mnist)",
            data_kind="sequence",
        ),
        "csv": DatasetSpec(
            ".csvseries:CSVSeriesDataModule",
            "a CSV file (--data-dir FILE.csv): numeric columns as channels, windows of --seq-len rows "
            "every --stride rows",
            data_kind="sequence",
            options=CSVSeriesOptions,
        ),
    },
)


def dataset_options() -> dict[str, tuple[Any, Any]]:
    """Every option some registered dataset declares, by name: (type, field)."""
    return option_specs({name: spec.options for name, spec in DATASETS.items()})


def parse_dataset_options(
    name: str, given: dict[str, Any], named: Collection[str] | None = None
) -> PluginOptions:
    """Dataset `name`'s options from the `given` dataset options, checked; one that only other datasets read
    is refused, and so is one of `named` (typed now; None: all) that its other settings leave unread."""
    dataset = DATASETS[name]
    assert dataset.options is not None
    own = dataset.options.types()
    reads = f"; it reads {', '.join(own)}" if own else ""
    foreign = f"does not apply to the dataset {name} ({dataset.data_kind} data){reads}; drop it"
    refuse_unread([option for option in given if option not in own], {}, foreign)
    options = dataset.options.parse({option: value for option, value in given.items() if option in own})
    typed = given if named is None else [option for option in given if option in named]
    refuse_unread([option for option in typed if given[option] is not None], options.unread())
    return options


# Marks a folder `genae prepare` wrote (streaming.py); written last, so a folder holding it is complete.
PREPARED_MANIFEST = "genae_prepared.json"


def default_data_dir() -> str:
    """Where the datasets are read from, or downloaded to, unless told: $GENAE_DATA_DIR, else ./data."""
    return os.environ.get("GENAE_DATA_DIR") or "./data"


def build_datamodule(name: str, **kwargs: Any) -> InMemoryDataModule:
    """Instantiate the dataset called `name` with the given DataModule arguments, its options checked as a
    run checks them; `data_dir` defaults as `--data-dir` does. A folder `genae prepare` wrote is streamed."""
    module = DATASETS[name].module
    kwargs.setdefault("data_dir", default_data_dir())
    given = {key: value for key, value in kwargs.items() if key in dataset_options() and value is not None}
    if (Path(kwargs["data_dir"]).expanduser() / PREPARED_MANIFEST).is_file():
        from lightning_genae.datamodules.streaming import streamed

        module, given = streamed(name, module, kwargs["data_dir"], given)
    parsed = parse_dataset_options(name, given, named=given)
    # The values as parsed (`seq_len='24'` -> 24), as a run hands them to the dataset.
    kwargs.update({key: getattr(parsed, key) for key in given})
    return module(**kwargs)


# Each imported from its module on first use (PEP 562), so that importing DATASETS does not import Lightning.
_LAZY_EXPORTS = {
    **{spec.location.partition(":")[2]: spec.location.partition(":")[0][1:] for spec in DATASETS.values()},
    **dict.fromkeys(("ImageDataModule", "InMemoryDataModule", "TensorImageDataModule"), "base"),
    **dict.fromkeys(("to_model_range", "to_uint8"), "pixels"),
}


# Hidden from type checkers, which would take any name the module lacks for a lazy one.
if not TYPE_CHECKING:
    __getattr__ = lazy_getattr(__name__, _LAZY_EXPORTS)
__dir__ = lazy_dir(globals(), _LAZY_EXPORTS)


__all__ = [
    "DATASETS",
    "DatasetSpec",
    "build_datamodule",
    "dataset_options",
    "parse_dataset_options",
    "default_data_dir",
    *_LAZY_EXPORTS,
]

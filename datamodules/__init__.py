"""Datasets by name: in-memory uint8 images (`ImageDataModule`) or normalised float series
(`SequenceDataModule`), each with fixed val/test splits."""

from __future__ import annotations

from typing import Any

from datamodules.base import (
    DataKind,
    ImageDataModule,
    InMemoryDataModule,
    InMemoryImages,
    collate_batch,
    to_model_range,
    to_uint8,
)
from datamodules.celeba import CelebADataModule
from datamodules.cifar10 import CIFAR10DataModule
from datamodules.csvseries import CSVSeriesDataModule
from datamodules.digits import DigitsDataModule
from datamodules.folder import ImageFolderDataModule
from datamodules.mnist import FashionMNISTDataModule, MNISTDataModule
from datamodules.sequence import Normaliser, SequenceDataModule
from datamodules.sines import SinesDataModule
from datamodules.smnist import SequentialMNISTDataModule
from lightning_genae.errors import ConfigError

DATASETS: dict[str, type[InMemoryDataModule]] = {
    module.name: module
    for module in (
        DigitsDataModule,
        MNISTDataModule,
        FashionMNISTDataModule,
        CIFAR10DataModule,
        CelebADataModule,
        ImageFolderDataModule,
        SinesDataModule,
        SequentialMNISTDataModule,
        CSVSeriesDataModule,
    )
}


def build_datamodule(name: str, **kwargs: Any) -> InMemoryDataModule:
    """Instantiate the dataset called `name` (a key of DATASETS) with the given DataModule arguments."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name](**kwargs)


__all__ = [
    "DATASETS",
    "CIFAR10DataModule",
    "CSVSeriesDataModule",
    "CelebADataModule",
    "DataKind",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "InMemoryDataModule",
    "InMemoryImages",
    "MNISTDataModule",
    "Normaliser",
    "SequenceDataModule",
    "SequentialMNISTDataModule",
    "SinesDataModule",
    "build_datamodule",
    "collate_batch",
    "to_model_range",
    "to_uint8",
]

"""Datasets by name: each is an in-memory uint8 `ImageDataModule` with fixed val/test splits."""

from __future__ import annotations

from typing import Any

from datamodules.base import ImageDataModule, InMemoryImages, collate_batch, to_model_range, to_uint8
from datamodules.celeba import CelebADataModule
from datamodules.cifar10 import CIFAR10DataModule
from datamodules.digits import DigitsDataModule
from datamodules.folder import ImageFolderDataModule
from datamodules.mnist import FashionMNISTDataModule, MNISTDataModule
from lightning_genae.errors import ConfigError

DATASETS: dict[str, type[ImageDataModule]] = {
    module.name: module
    for module in (
        DigitsDataModule,
        MNISTDataModule,
        FashionMNISTDataModule,
        CIFAR10DataModule,
        CelebADataModule,
        ImageFolderDataModule,
    )
}


def build_datamodule(name: str, **kwargs: Any) -> ImageDataModule:
    """Instantiate the dataset called `name` (a key of DATASETS) with the given ImageDataModule arguments."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name](**kwargs)


__all__ = [
    "DATASETS",
    "CIFAR10DataModule",
    "CelebADataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "InMemoryImages",
    "MNISTDataModule",
    "build_datamodule",
    "collate_batch",
    "to_model_range",
    "to_uint8",
]

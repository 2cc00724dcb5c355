"""Sequential MNIST: each digit row by row (28 steps of 28 pixels), with `mnist`'s files and fixed splits."""

from __future__ import annotations

import torch

from lightning_genae.datamodules.base import SPLITS, Batch
from lightning_genae.datamodules.mnist import MNISTDataModule
from lightning_genae.datamodules.sequence import Normaliser, SequenceDataModule


class SequentialMNISTDataModule(SequenceDataModule):
    """MNIST rows as time steps; pixels scaled from [0, 255] to [-1, 1], the range the image models use."""

    name = "smnist"
    classes = 10
    bounded = True

    def _images(self) -> MNISTDataModule:
        return MNISTDataModule(self.data_dir, batch_size=self.batch_size)

    @property
    def data_shape(self) -> tuple[int, int]:
        return (28, 28)

    def prepare_data(self) -> None:
        self._images().prepare_data()

    def _load_series(self) -> dict[str, Batch]:
        mnist = self._images()
        # MNIST's splits, held to its image contract, [N, 1, 28, 28] uint8 -> [N, 28 rows, 28 columns] float.
        splits = {split: mnist.split_tensors(split) for split in SPLITS}
        return {split: (images.squeeze(1).float(), labels) for split, (images, labels) in splits.items()}

    def _fit_normaliser(self, train_series: torch.Tensor) -> Normaliser:
        # Fixed rather than fitted: a border column is almost always 0, and a fitted std would blow up
        # the few pixels that are not; one scale for every column keeps a digit's strokes comparable.
        return Normaliser(mean=(127.5,) * 28, std=(127.5,) * 28)

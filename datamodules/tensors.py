"""Your own images, already in memory, as a DataModule every family, callback and metric understands."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lightning_genae.datamodules.base import SPLITS, Batch, ImageDataModule, checked_image_split


class TensorImageDataModule(ImageDataModule):
    """Images you hold as tensors: `splits` maps "train", "val" and "test" to (uint8 images [N, C, H, W]
    in 0..255, int64 labels [N], -1 where unlabelled); `name` names the data in messages."""

    def __init__(
        self,
        splits: Mapping[str, tuple[Tensor, Tensor]],
        name: str = "my_images",
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        given = {split: checked_image_split(f"{name} {split}", *splits[split]) for split in SPLITS}
        # What a registered dataset sets on its class; every split is held to the train split's shape.
        self.name = name
        self.default_shape = tuple(given["train"][0].shape[1:])
        labels = torch.cat([labels for _, labels in given.values()])
        self.classes = int(labels.max()) + 1 if bool((labels >= 0).any()) else None
        self._given = given
        super().__init__(data_dir=".", batch_size=batch_size, seed=seed)

    def labelling_advice(self) -> str:
        return "give each split's labels as class ids 0, 1, ... (-1 where an image has none), or "

    def _load_splits(self) -> dict[str, Batch]:
        return dict(self._given)

"""Binarized MNIST as the likelihood literature uses it (Burda et al. 2016): each pixel Bernoulli(intensity
/ 255), training batches drawn anew per step from the run seed, val/test binarized once from a fixed seed."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_genae.datamodules.base import Batch
from lightning_genae.datamodules.mnist import MNISTDataModule
from lightning_genae.datamodules.splits import FIXED_SPLIT_SEED, seeded_uniform
from lightning_genae.seeding import generator

# Streams of `seeded_uniform` for the fixed binarization of each evaluation split.
FIXED_STREAMS = {"val": 1, "test": 2}


def binarize_fixed(images: Tensor, stream: int, seed: int = FIXED_SPLIT_SEED) -> Tensor:
    """Each pixel 255 with probability intensity / 255, else 0, drawn from (seed, stream) alone."""
    uniform = torch.from_numpy(seeded_uniform(images.numel(), seed, stream)).view(images.shape)
    return torch.where(uniform < images.double() / 255.0, 255, 0).to(torch.uint8)


class BinarizedMNISTDataModule(MNISTDataModule):
    """MNIST's splits (55,000 train, 5,000 val, 10,000 test) with binary pixels."""

    name = "binarized_mnist"
    binary_pixels = True

    def _load_splits(self) -> dict[str, Batch]:
        splits = super()._load_splits()
        for split, stream in FIXED_STREAMS.items():
            images, labels = splits[split]
            splits[split] = (binarize_fixed(images, stream), labels)
        return splits

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Training batches: a fresh binarization on the device; evaluation batches (already binary) as is."""
        items, labels = batch
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return self.to_model_range(items), labels
        draws = generator(
            self.seed, "binarized batch", trainer.current_epoch, trainer.global_step, device=items.device
        )
        bits = torch.bernoulli(items.float().div(255.0), generator=draws)
        return bits.mul_(2.0).sub_(1.0), labels

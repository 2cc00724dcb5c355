"""Data-side augmentation, a wrapper around an image DataModule: online, a fraction p of every training batch
replaced on the device by the augmenter's output; offline, a pool added once. Evaluation sees real data."""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_genae.augmentation import AugmentPlan
from lightning_genae.augmentation.adaptive import AdaptiveStrength
from lightning_genae.augmentation.latent import LatentAugmenter
from lightning_genae.cache import cache_root, state_sha256
from lightning_genae.cluster import created_by_local_rank_zero
from lightning_genae.datamodules.base import Batch, InMemoryDataModule
from lightning_genae.datamodules.pixels import bernoulli_pixels
from lightning_genae.datamodules.placement import host_to_device
from lightning_genae.datamodules.streaming import StreamedSplits, write_items
from lightning_genae.errors import OptionError
from lightning_genae.plugin_options import AUTO
from lightning_genae.seeding import generator

POOL_BATCH = 500
# Where a checkpoint keeps the state of the generator that picks and perturbs the replaced images.
GENERATOR_KEY = "augment_generator"


class AugmentedDataModule(pl.LightningDataModule):
    """Wraps `base`; anything not defined here (name, image_shape, split_tensors, ...) is the base's."""

    def __init__(
        self,
        base: InMemoryDataModule,
        plan: AugmentPlan,
        augmenter: LatentAugmenter,
        seed: int = 0,
        total_iterations: int | None = None,
        strength: AdaptiveStrength | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        self.plan = plan
        # Fitted on the base's training split; shared with discriminator-side `ae-d` when both are on.
        self.augmenter = augmenter
        self.seed = seed
        # Training length in iterations, for --augment-anneal.
        self.total_iterations = total_iterations
        # ADA's controller when --augment-p is auto (it then sets p; the model checkpoints it).
        self.strength = strength
        # The offline pool: held, or the folder it is streamed from where the base streams its train split.
        self._pool: Batch | Path | None = None
        self._generator: torch.Generator | None = None
        # A resumed run's generator state, kept until the generator exists (setup) if it comes first.
        self._restored_generator: Tensor | None = None
        self.replaced_last_batch = 0

    @property
    def name(self) -> str:  # LightningDataModule defines `name` itself, so __getattr__ would not reach it
        return self.base.name

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this wrapper lacks; "base" itself must not recurse.
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def state_dict(self) -> dict[str, Any]:
        # What the base saves with a checkpoint (the training split's hash, a sequence dataset's normaliser)
        # is the run's to keep; the replacement draws go on from where they were on resume.
        state = dict(self.base.state_dict())
        if self._generator is not None:
            generator_state = self._generator.get_state()
            world_size = self.trainer.world_size if self.trainer is not None else 1
            if world_size > 1:
                # Every rank draws from its own generator and makes this state as a checkpoint is made (rank 0
                # writes the file): the checkpoint holds every rank's (a collective per checkpoint).
                ranks: list[Any] = [None] * world_size
                torch.distributed.all_gather_object(ranks, generator_state)
                state[GENERATOR_KEY] = ranks
            else:
                state[GENERATOR_KEY] = generator_state
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self._restored_generator = state_dict.pop(GENERATOR_KEY, None)
        self.base.load_state_dict(state_dict)
        self._restore_generator()

    def _restore_generator(self) -> None:
        if self._restored_generator is None or self._generator is None:
            return
        restored, self._restored_generator = self._restored_generator, None
        world_size = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        if isinstance(restored, Tensor) and world_size == 1:
            self._generator.set_state(restored)
        elif isinstance(restored, list) and len(restored) == world_size:
            self._generator.set_state(restored[rank])
        # Else the checkpoint came from another number of processes: each rank keeps the stream seeded for it.

    def prepare_data(self) -> None:
        self.base.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.base.trainer = self.trainer
        self.base.setup(stage)
        self.augmenter.to(self.trainer.strategy.root_device if self.trainer is not None else "cpu")
        if self._generator is None:
            rank = self.trainer.global_rank if self.trainer is not None else 0
            # Per rank, or every device would replace the same positions with the same draws.
            self._generator = generator(self.seed, "online augmentation", rank)
            self._restore_generator()
        if self.plan.mode == "offline" and self._pool is None:
            size = self.plan.pool if self.plan.pool is not None else self.base.split_size("train")
            least = self.base.batch_size_per_device * (self.trainer.world_size if self.trainer else 1)
            if self._streams and size < least:
                # A stream gives each process whole batches of each source's items, so none of it would train.
                raise OptionError(
                    "augment_pool",
                    f"{size} is less than a batch for each process ({least}); give at least that",
                )
            self._pool = self._written_pool(size) if self._streams else self._held_pool(size)

    @property
    def _streams(self) -> bool:
        """Whether training streams the base's train split (a `train_size` subset of it is held)."""
        return isinstance(self.base, StreamedSplits) and self.base.train_size is None

    def _held_pool(self, size: int) -> Batch:
        # The generated parts and their concatenation (uint8 images) are held at once: twice the pool.
        needed = 2 * size * math.prod(self.base.data_shape)
        if needed > physical_memory():
            # Refused before any allocation: an overcommitting OS would kill the process part-way, not raise.
            raise OptionError(
                "augment_pool",
                f"{size} does not fit in memory ({needed / 2**30:.1f} GiB); lower it",
            )
        images, labels = zip(*self._generate_pool(size), strict=True)
        return torch.cat(images), torch.cat(labels)

    def _written_pool(self, size: int) -> Path:
        """The pool of `size` images as a prepared split in the cache, written a block at a time by local rank
        0 if absent, its folder named by augmenter, run seed, size, training split and augmenter's device."""
        augmenter = self.augmenter
        made_by = [state_sha256(augmenter), augmenter.noise, augmenter.interp, augmenter.device.type]
        made_by += [self.seed, size, self.base.content_sha256("train")]
        folder = cache_root() / "pools" / hashlib.sha256(json.dumps(made_by).encode()).hexdigest()

        def write() -> None:
            if folder.is_dir():
                return
            temporary = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.tmp")
            try:
                write_items(temporary, self._generate_pool(size))
                try:
                    temporary.rename(folder)
                except OSError:
                    if not folder.is_dir():
                        raise  # else another process's pool of this key came first
            finally:
                shutil.rmtree(temporary, ignore_errors=True)

        created_by_local_rank_zero(folder, write, "augmented pool")
        return folder

    @torch.no_grad()
    def _generate_pool(self, size: int) -> Iterator[Batch]:
        """`size` augmented images from the run seed's "augmented pool" stream, in blocks of POOL_BATCH."""
        count = self.base.split_size("train")
        draws = generator(self.seed, "augmented pool")
        repeats = -(-size // count)
        sources = torch.cat([torch.randperm(count, generator=draws) for _ in range(repeats)])[:size]
        for index in sources.split(POOL_BATCH):
            images, labels = self.base.items_at("train", index)
            batch = self.base.to_model_range(images.to(self.augmenter.device))
            # Stored as the decoder's pixel values: binary data draws its pixels from them at every batch, as
            # it does from the real images' intensities.
            batch = as_training_pixels(self.base, batch, draws)
            yield self.base.to_stored(self.augmenter(batch, labels, generator=draws)).cpu(), labels

    def train_images(self) -> Batch:
        """What training iterates over: the real split, plus the augmented pool in offline mode."""
        images, labels = self.base.split_tensors("train")
        if not isinstance(self._pool, tuple):
            return images, labels
        return torch.cat([images, self._pool[0]]), torch.cat([labels, self._pool[1]])

    def train_dataloader(self) -> DataLoader:
        """The base's own training loader (a stream where the base streams, of the real split and the offline
        pool's folder where it has one), or with a held pool a loader over the real split and the pool."""
        if isinstance(self._pool, Path):
            return self.base.train_dataloader(pool=self._pool)
        if self._pool is None:
            return self.base.train_dataloader()
        self.base.check_batch_fits()  # against the real split, whatever the pool adds
        return self.base.loader_over(*self.train_images(), train=True)

    def val_dataloader(self) -> DataLoader:
        return self.base.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.base.test_dataloader()

    def current_p(self) -> float:
        """--augment-p, taken linearly to zero with --augment-anneal, or the controller's host copy (one
        update behind), so that round(p * B) is set on the host without waiting for the device."""
        if self.plan.p == AUTO:
            assert self.strength is not None
            return self.strength.p_host
        if not self.plan.anneal or not self.total_iterations or self.trainer is None:
            return self.plan.p
        iteration = getattr(self.trainer.lightning_module, "iteration", 0)
        return self.plan.p * max(0.0, 1.0 - iteration / self.total_iterations)

    def replace_fraction(self, images: Tensor, labels: Tensor, p: float) -> tuple[Tensor, int]:
        """Replace round(p * B) randomly chosen images by their augmented versions; returns the count."""
        count = int(round(p * len(images)))
        if count == 0:
            return images, 0
        assert self._generator is not None
        index = host_to_device(torch.randperm(len(images), generator=self._generator)[:count], images.device)
        self.augmenter.to(images.device)
        with torch.no_grad():
            augmented = self.augmenter(images[index], labels[index], generator=self._generator)
            augmented = as_training_pixels(self.base, augmented, self._generator)
        images = images.clone()
        images[index] = augmented.to(images.dtype)
        return images, count

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        images, labels = self.base.on_after_batch_transfer(batch, dataloader_idx)
        if self.plan.online and self.trainer is not None and self.trainer.training:
            images, self.replaced_last_batch = self.replace_fraction(images, labels, self.current_p())
        return images, labels

    @torch.no_grad()
    def preview(self, images: Tensor, labels: Tensor) -> Tensor:
        """Augmented versions of images in [-1, 1] (every one of them), for the preview grid."""
        self.augmenter.to(images.device)
        return self.augmenter(images, labels, generator=generator(self.seed, "augmentation preview draws"))

    def summary(self) -> str:
        if self.plan.mode == "offline":
            size = self.plan.pool or self.base.split_size("train")  # the pool's size, made or not
            extra = f"offline pool of {size} augmented images"
            if self._streams:
                extra += ", streamed with the train split in the training process (no loader workers)"
        else:
            p = "auto (ADA's controller)" if self.plan.p == AUTO else self.plan.p
            extra = f"online, p={p}{' annealed' if self.plan.anneal else ''}"
        return f"{self.base.summary()}; {self.plan.augmenter_family} augmentation {extra}"


def as_training_pixels(datamodule: InMemoryDataModule, images: Tensor, generator: torch.Generator) -> Tensor:
    """Images in [-1, 1] as a training batch of `datamodule` holds them: binarized by one Bernoulli draw per
    pixel where its pixels are binary, so that augmented images do not stand out by their kind of pixel."""
    return bernoulli_pixels(images, generator) if getattr(datamodule, "binary_pixels", False) else images


def physical_memory() -> float:
    """This machine's memory in bytes (infinite where the system does not say)."""
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float("inf")

"""In-memory datamodules: one tensor per split, batched by indexing, made model input on the accelerator."""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_genae.datamodules.loaders import (
    Batch,
    DeviceBatches,
    EpochShuffle,
    InMemoryImages,
    ResumableLoader,
    collate_batch,
)
from lightning_genae.datamodules.pixels import to_model_range, to_uint8
from lightning_genae.datamodules.placement import batch_device, check_data_on_device
from lightning_genae.datamodules.splits import stratified_sample
from lightning_genae.errors import ConfigError, DataError, OptionError, describe_error
from lightning_genae.seeding import generator

if TYPE_CHECKING:
    from hashlib import _Hash

SPLITS = ("train", "val", "test")
# The keys of a checkpoint's datamodule state: the training split's SHA-256, and {"val": ..., "test": ...}.
TRAIN_CONTENT_KEY = "train_sha256"
EVALUATION_CONTENT_KEY = "evaluation_sha256"
# The batch `map_images` computes in; a split read in blocks of its multiples maps to the same batches.
MAP_BATCH = 500


@torch.no_grad()
def map_images(
    function: Callable[[Tensor], Tensor],
    images: Tensor,
    device: torch.device,
    prepare: Callable[[Tensor], Tensor] = to_model_range,
) -> Tensor:
    """`function` of stored items made model input by `prepare`, a batch at a time on `device`; float32."""
    return torch.cat(
        [
            function(prepare(images[start : start + MAP_BATCH].to(device))).float().cpu()
            for start in range(0, len(images), MAP_BATCH)
        ]
    )


DataKind = Literal["image", "sequence"]


def checked_image_split(
    split: str, images: Tensor, labels: Tensor, shape: Sequence[int] | None = None, classes: int | None = None
) -> Batch:
    """One split as stored, uint8 images [N, *shape] and int64 class ids below `classes` (-1: none)."""
    whole = not labels.is_floating_point() or bool((labels == labels.round()).all())
    top = classes if classes is not None else float("inf")
    if (
        images.dtype != torch.uint8
        or images.dim() != 4
        or (shape is not None and tuple(images.shape[1:]) != tuple(shape))
        or labels.shape != (len(images),)
        or not whole
        or bool((labels < -1).any() or (labels >= top).any())
    ):
        expected = "C, H, W" if shape is None else ", ".join(map(str, shape))
        ids = "0, 1, ..." if classes is None else f"0..{classes - 1}"
        raise DataError(
            f"{split}: expected uint8 images [N, {expected}] in 0..255 and [N] class ids {ids} (-1: none), "
            f"got images {images.dtype} {list(images.shape)}, labels {labels.dtype} {list(labels.shape)}"
        )
    return images, labels.long()


class InMemoryDataModule(pl.LightningDataModule):
    """Base of every dataset: fixed splits in memory, an optional stratified train subset, device batches."""

    name: ClassVar[str] = "data"
    # What the data is; a model family declares the same, and `resolve` checks that they agree.
    data_kind: ClassVar[DataKind]
    classes: ClassVar[int | None] = None
    item_noun: ClassVar[str] = "images"

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 64,
        train_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        data_on_device: str = "auto",
    ) -> None:
        """The arguments every dataset takes; a subclass adds its own before `**shared`. They are saved as the
        hyper-parameters, from which copies of a run's data are rebuilt (`type(dm)(**dm.hparams)`)."""
        super().__init__()
        # Saved as a string so the hparams YAML loggers write stays loadable with yaml.safe_load.
        data_dir = str(data_dir)
        # A fraction or a count below 1 would cut the training split and its batches otherwise without a word.
        for name, count in {"batch_size": batch_size, "train_size": train_size}.items():
            whole = isinstance(count, numbers.Integral) and not isinstance(count, bool)
            if not (count is None and name == "train_size") and not (whole and count >= 1):
                raise OptionError(name, f"{count!r} must be a whole number of at least 1")
        check_data_on_device(data_on_device)
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size = batch_size
        self.train_size = train_size
        self.seed = seed
        self.num_workers = num_workers
        self.data_on_device = data_on_device
        self.batch_size_per_device = batch_size
        self._splits: dict[str, Batch] | None = None
        self._train_split_size = 0
        self._content_sha256: dict[str, str] = {}
        self._full_training_sha256: str | None = None
        self.save_hyperparameters()

    # One item's shape, known before setup: (C, H, W) of an image, (T, C) of a series; models are built on it.
    data_shape: tuple[int, ...]

    @property
    def num_classes(self) -> int | None:
        """Number of label classes, or None for unlabeled data (labels are then -1)."""
        return self.classes

    def labelling_advice(self) -> str:
        """How to give this data the labels a feature classifier needs: a clause ending in ", or "."""
        return ""

    def reading_advice(self) -> str:
        """How to read the files as an earlier version did, a clause for the refusal of other data."""
        return ""

    # The model's input from stored items (uint8 images -> [-1, 1]); and back, for generated pools.
    to_model_range: Callable[[Tensor], Tensor]
    to_stored: Callable[[Tensor], Tensor]

    # Every dataset's: the fixed (items [N,...], int64 [N]) train/val/test splits, whatever the run seed.
    _load_splits: Callable[[], dict[str, Batch]]

    # The dataset's "not found" error, with why (offline, still missing, ...) and where to put the files.
    _not_found: Callable[[str], DataError]

    def _missing(self) -> list[str]:
        """The files the dataset reads that its folder lacks; setup refuses to load without them."""
        return []

    def _download(self, dataset: str, **options: object) -> None:
        """torchvision's `dataset` downloaded into data_dir; a failure is the dataset's "not found" error."""
        from torchvision import datasets

        try:
            getattr(datasets, dataset)(root=str(self.data_dir), download=True, **options)
        except Exception as exc:
            raise self._not_found(f"and it cannot be downloaded ({describe_error(exc)}; offline?)") from exc

    def setup(self, stage: str | None = None) -> None:
        """Set the per-device batch size and load the data once (later calls only re-check the batch size)."""
        world_size = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world_size:
            raise OptionError("batch_size", f"{self.batch_size} does not divide across {world_size} devices")
        self.batch_size_per_device = self.batch_size // world_size
        self._load_once()

    def _load_once(self) -> None:
        if self._splits is not None:
            return
        if self._missing():
            raise self._not_found("(call prepare_data() to download the dataset)")
        splits = self._load_splits()
        if self.data_kind == "image":
            # The contract every image dataset's `_load_splits` keeps (a plug-in's too).
            splits = {
                split: checked_image_split(
                    f"{self.name} {split}", *splits[split], self.data_shape, self.classes
                )
                for split in SPLITS
            }
        train_images, train_labels = splits["train"]
        self._train_split_size = len(train_images)
        if self.train_size is not None:
            # Hashed before the subset is taken (`full_training_sha256`), without loading the data twice.
            self._full_training_sha256 = _split_sha256(train_images, train_labels)
            subset = self._train_subset(train_labels)
            splits["train"] = (train_images[subset], train_labels[subset])
        self._splits = splits

    def _train_subset(self, labels: Tensor) -> Tensor:
        """The indices of the stratified `train_size` subset of training `labels`, drawn by the run seed."""
        assert self.train_size is not None
        if self.train_size > len(labels):
            what = f"the {len(labels)} training {self.item_noun} of {self.name}"
            raise OptionError("train_size", f"{self.train_size} exceeds {what}; use at most {len(labels)}")
        return stratified_sample(labels, self.train_size, self.seed)[0]

    def split_tensors(self, split: str) -> Batch:
        """(stored items, int64 labels [N]) of "train" (its `train_size` subset), "val" or "test"."""
        self._load_once()
        assert self._splits is not None
        return self._splits[split]

    def split_size(self, split: str) -> int:
        """The number of items of `split` (of "train", its `train_size` subset)."""
        return len(self.split_tensors(split)[0])

    def items_at(self, split: str, indices: Tensor) -> Batch:
        """The stored items and labels of `split` at `indices`, read alone where the split is streamed."""
        images, labels = self.split_tensors(split)
        return images[indices], labels[indices]

    def _read_alone(self, split: str) -> bool:
        """Whether a dataset that can read `split` in parts does: it is not held, and is no train subset."""
        return split not in (self._splits or {}) and not (split == "train" and self.train_size is not None)

    def split_batches(self, split: str) -> Iterator[Batch]:
        """`split` (of "train", its `train_size` subset) in its stored order, as consecutive (items, labels)
        blocks whose sizes are multiples of MAP_BATCH: a pass over a streamed split without holding it."""
        yield self.split_tensors(split)

    def content_sha256(self, split: str) -> str:
        """Hex SHA-256 of one split as stored (item shape and dtype, items, labels); computed once."""
        if split not in self._content_sha256:
            self._content_sha256[split] = _split_sha256(*self.split_tensors(split))
        return self._content_sha256[split]

    def full_training_sha256(self) -> str:
        """`content_sha256("train")` of the whole training split, whatever `train_size` took from it."""
        self._load_once()
        return self._full_training_sha256 or self.content_sha256("train")

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the splits' hashes, so that a checkpoint used as an augmenter is matched
        to its run's data, and a resumed or re-evaluated run scores on the data it did."""
        return {
            TRAIN_CONTENT_KEY: self.content_sha256("train"),
            EVALUATION_CONTENT_KEY: {split: self.content_sha256(split) for split in ("val", "test")},
        }

    def loader_over(self, images: Tensor, labels: Tensor, train: bool) -> DataLoader | DeviceBatches:
        """This DataModule's loader over in-memory items: training batches resumable (a resumed run sees the
        batches an uninterrupted one would), evaluation batches in order, under DDP each rank's share."""
        world_size = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        if train:
            root = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            size = images.numel() * images.element_size() + labels.numel() * labels.element_size()
            if (device := batch_device(self.data_on_device, self.num_workers, root, size)) is not None:
                images, labels = images.to(device), labels.to(device)
                return DeviceBatches(images, labels, self.batch_size_per_device, self.seed, rank, world_size)
        return self.batches_of(InMemoryImages(images, labels), train)

    def batches_of(self, dataset: Dataset, train: bool) -> DataLoader:
        """`loader_over`'s loader on the host, over any `dataset` whose `__getitems__` gives a batch."""
        world_size = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        options: dict[str, Any] = {
            "batch_size": self.batch_size_per_device,
            "drop_last": train,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "collate_fn": collate_batch,
            # The workers' base seed, which DataLoader otherwise draws from the global stream at every pass.
            "generator": generator(self.seed, "loader"),
        }
        if not train:
            if world_size > 1:
                # Each item once (a DistributedSampler pads a split with repeats, which every metric would
                # count twice); a process left no item would stall the others.
                if len(dataset) < world_size:
                    raise ConfigError(
                        f"an evaluation split of {len(dataset)} items leaves some of the {world_size} "
                        "processes none; use fewer devices or a larger split"
                    )
                shard = UnrepeatedDistributedSampler(dataset, world_size, rank, shuffle=False)
                return DataLoader(dataset, sampler=shard, **options)
            return DataLoader(dataset, shuffle=False, **options)
        if world_size > 1:
            # Stateful on every world size, so that a checkpoint of either kind resumes on the other.
            return ResumableLoader(dataset, shuffle=True, **options)
        return ResumableLoader(dataset, sampler=EpochShuffle(len(dataset), self.seed), **options)

    def check_batch_fits(self) -> None:
        """Refuse a `batch_size` larger than the training split: training takes full batches only."""
        available = self.split_size("train")
        # The global batch against the whole split also covers DDP, where each rank gets 1/world of it.
        if available < self.batch_size:
            what = f"{available} training {self.item_noun} of {self.name}"
            raise OptionError("batch_size", f"{self.batch_size} exceeds the {what}; use at most {available}")

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        """Shuffled, full batches only, so every step sees the same batch size."""
        self.check_batch_fits()
        return self.loader_over(*self.split_tensors("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader_over(*self.split_tensors("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader_over(*self.split_tensors("test"), train=False)

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """The stored batch as the model's input, made on the device (uint8 moves a quarter of float32)."""
        items, labels = batch
        return self.to_model_range(items), labels

    def summary(self) -> str:
        """One line: split sizes and item shape, e.g. `mnist: train 55000 (subset 1000) / val 5000 / ...`."""
        counts = {split: self.split_size(split) for split in SPLITS}
        train = f"{self._train_split_size}" + (f" (subset {counts['train']})" if self.train_size else "")
        shape = "x".join(str(d) for d in self.data_shape)
        return f"{self.name}: train {train} / val {counts['val']} / test {counts['test']}, {shape}"

    def __repr__(self) -> str:
        # Never triggers loading: before setup only the static facts are known.
        if self._splits is None:
            shape = "x".join(str(d) for d in self.data_shape)
            return f"{type(self).__name__}({self.name}, {shape}, not set up)"
        return f"{type(self).__name__}({self.summary()})"

    # LightningDataModule's own str() loads the data and fails on loaders that are no DataLoaders.
    __str__ = __repr__


class ImageDataModule(InMemoryDataModule):
    """Images stored as uint8 [N,C,H,W], scaled to float [-1, 1] on the device."""

    name: ClassVar[str] = "images"
    data_kind: ClassVar[DataKind] = "image"
    # (C, H, W) of the stored images when neither image_size nor channels is given.
    default_shape: ClassVar[tuple[int, int, int]] = (3, 64, 64)
    # Every evaluation pixel is 0 or 255: generated images are then binarized before their features.
    binary_pixels: ClassVar[bool] = False

    def __init__(
        self,
        data_dir: str | Path,
        image_size: int | None = None,
        channels: int | None = None,
        **shared: Any,
    ) -> None:
        """`shared`: the arguments of `InMemoryDataModule`."""
        data_dir = str(data_dir)  # as the saved hyper-parameter (this frame's value is the one kept)
        super().__init__(data_dir, **shared)
        self._check_geometry(image_size, channels)

    def _check_geometry(self, image_size: int | None, channels: int | None) -> None:
        """Refuse a size or channel count the dataset cannot deliver, rather than ignore it."""
        default_c, default_h, _ = self.default_shape
        for name, value, fixed in (("image_size", image_size, default_h), ("channels", channels, default_c)):
            if value is not None and value != fixed:
                fix = "drop it, or use the folder dataset"
                raise OptionError(name, f"{value}: {self.name} has {fixed}; {fix}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image this datamodule yields."""
        return self.default_shape

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self.image_shape

    to_model_range = staticmethod(to_model_range)
    to_stored = staticmethod(to_uint8)


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


def split_digest(size: int, items: Tensor) -> _Hash:
    """The SHA-256 of a split of `size` items like `items`, fed their shape and dtype (the same bytes read as
    other items are other data), to be fed its items, then its labels."""
    return hashlib.sha256(f"{(size, *items.shape[1:])}|{items.dtype}|".encode())


def _split_sha256(items: Tensor, labels: Tensor) -> str:
    """Hex SHA-256 of a split's item shape and dtype, items and labels."""
    digest = split_digest(len(items), items)
    digest.update(items.contiguous().numpy())
    digest.update(labels.contiguous().numpy())
    return digest.hexdigest()

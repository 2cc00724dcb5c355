"""Datasets streamed from a folder `prepare` wrote in LitData's format with a manifest: training streams the
train split, evaluation reads val and test by index; a `train_size` subset is held."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from litdata import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset
from litdata.streaming.writer import BinaryWriter
from litdata.utilities.env import _DistributedEnv
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_genae.cache import write_file_atomically
from lightning_genae.datamodules import DATASETS
from lightning_genae.datamodules import PREPARED_MANIFEST as MANIFEST
from lightning_genae.datamodules.base import (
    MAP_BATCH,
    SPLITS,
    Batch,
    InMemoryDataModule,
    split_digest,
)
from lightning_genae.datamodules.sequence import Normaliser
from lightning_genae.errors import DataError, OptionError
from lightning_genae.progress import PhaseProgress
from lightning_genae.seeding import generator

FORMAT = 2
# Chunk size: large enough that a read is one sequential request, small enough that shuffling chunks mixes
# and that the few chunks a reader maps at once stay small beside the run (bench/streaming.py).
CHUNK_BYTES = "16MB"
# Items read at once in a pass over a streamed split (`split_batches`): 7.8 MB of MNIST.
STREAM_BLOCK = 20 * MAP_BATCH


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The manifest of the prepared folder `data_dir` (JSON, never unpickled)."""
    path = Path(data_dir).expanduser() / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        known = manifest["format"] == FORMAT and all(split in manifest["splits"] for split in SPLITS)
    except (ValueError, KeyError, TypeError):
        known = False
    if not known:
        raise DataError(f"{path} is no manifest (format {FORMAT}) of a prepared dataset; prepare it again")
    return manifest


def prepare(datamodule: InMemoryDataModule, dataset: str, output: str | Path) -> dict[str, Any]:
    """Write every split of `datamodule` under `output/<split>` in LitData's format, then the manifest."""
    output = Path(output).expanduser()
    datamodule.prepare_data()
    splits = {}
    for split in SPLITS:
        size = datamodule.split_size(split)  # which reads a split held whole
        # Quiet for its first second, so that its first line's estimate of the time left means something.
        progress = PhaseProgress(f"prepare {dataset} {split}", size, datamodule.item_noun, quiet_for=1.0)
        content = SplitHash(size)
        write_items(output / split, content.passing(datamodule.split_batches(split)), progress.advance)
        splits[split] = {"items": size, "sha256": content.hexdigest()}
    options = {name: datamodule.hparams.get(name) for name in DATASETS[dataset].options.types()}
    manifest = {
        "format": FORMAT,
        "dataset": dataset,
        "options": {name: value for name, value in options.items() if value is not None},
        "shape": list(datamodule.data_shape),
        # A folder's classes are its subfolders, which the prepared folder no longer has.
        "classes": datamodule.num_classes,
        "splits": splits,
    }
    if datamodule.data_kind == "sequence":
        # The training split's scale (and range) and channel names, which normalised stored series lack.
        manifest["normaliser"] = datamodule.normaliser.to_dict()
        manifest["channel_names"] = getattr(datamodule, "channel_names", None)
    write_file_atomically(output / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_items(folder: Path, blocks: Iterable[Batch], written: Callable[[], object] = lambda: None) -> None:
    """(stored items, labels) blocks written to `folder` as `prepare` writes a split, one block held."""
    writer, index = BinaryWriter(str(folder), chunk_bytes=CHUNK_BYTES), 0
    # One process writes it: in a distributed run LitData would otherwise wait for every rank's part.
    writer._distributed_env = _DistributedEnv(1, 0, 1)
    for items, labels in blocks:
        for item, label in zip(items, labels.tolist(), strict=True):
            writer[index] = {"item": item, "label": label}
            index += 1
            written()
    writer.done()
    writer.merge()


class SplitHash:
    """A split's `content_sha256`, of `size` items, taken from its blocks as they pass (`passing`)."""

    def __init__(self, size: int) -> None:
        self.size, self.digest, self.labels = size, None, []

    def passing(self, blocks: Iterable[Batch]) -> Iterator[Batch]:
        """`blocks` handed on, each hashed once it is used: hashing a split held whole takes seconds."""
        for items, labels in blocks:
            yield items, labels
            self.digest = self.digest or split_digest(self.size, items)
            self.digest.update(items.contiguous().numpy())
            self.labels.append(labels)

    def hexdigest(self) -> str:
        """The SHA-256 once every block has passed: its items', then its labels'."""
        assert self.digest is not None  # a split holds at least one item
        self.digest.update(torch.cat(self.labels).contiguous().numpy())
        return self.digest.hexdigest()


def stack_items(items: list[dict[str, Any]]) -> Batch:
    """A batch of streamed items as the in-memory loaders give it: (stored items [B, ...], int64 [B])."""
    return torch.stack([item["item"] for item in items]), torch.tensor([item["label"] for item in items])


class PreparedSplit(Dataset):
    """A prepared split read by index: `__getitems__` reads one batch's items from the split's chunks."""

    def __init__(self, path: Path) -> None:
        self.stored = StreamingDataset(str(path))

    def __len__(self) -> int:
        return len(self.stored)

    def __getitems__(self, indices: list[int]) -> Batch:
        return stack_items([self.stored[index] for index in indices])


class StreamedSplits(InMemoryDataModule):
    """Mixed in before a registered DataModule by `streamed`: its splits (and a series' shape, scale and
    channel names) come from the prepared folder `data_dir`; everything else stays the dataset's."""

    @functools.cached_property
    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.data_dir)

    def _check_geometry(self, image_size: int | None, channels: int | None) -> None:
        """The dataset's own check, then the prepared images' shape against the one this run asks for."""
        super()._check_geometry(image_size, channels)
        shape = tuple(self.data_shape)
        prepared = tuple(self.manifest["shape"])
        if shape != prepared:
            size = "x".join(map(str, prepared))
            raise DataError(
                f"{self.data_dir} holds images prepared at {size}, not {'x'.join(map(str, shape))}; drop "
                "--image-size and --channels, or prepare the data again at this size"
            )

    @property
    def num_classes(self) -> int | None:
        return self.manifest["classes"]

    @property
    def data_shape(self) -> tuple[int, ...]:
        if self.data_kind == "sequence":
            return tuple(self.manifest["shape"])
        return super().data_shape

    @property
    def channel_names(self) -> list[str] | None:
        return self.manifest.get("channel_names")

    def prepare_data(self) -> None:
        """Nothing to download: the folder was prepared."""

    def _load_once(self) -> None:
        """Nothing is read here: each split is read where it is asked for, whole only by `split_tensors`."""
        if self._splits is None:
            self._splits = {}
            self._train_split_size = self.manifest["splits"]["train"]["items"]
            if self.data_kind == "sequence":
                self._normaliser = Normaliser.from_dict(self.manifest["normaliser"])

    def split_tensors(self, split: str) -> Batch:
        """A split read whole, checked against the manifest's SHA-256; of "train" with `train_size`, the split
        checked in blocks and the subset alone read, by index."""
        self._load_once()
        if split not in self._splits:
            if split == "train" and self.train_size is not None:
                subset = self._train_subset(self._checked_read(split)[1]).tolist()
                self._splits[split] = PreparedSplit(self.data_dir / split).__getitems__(subset)
            else:
                self._splits[split] = self._checked_read(split, held=True)
        return self._splits[split]

    def split_size(self, split: str) -> int:
        if split == "train" and self.train_size is not None:
            return self.train_size
        return self.manifest["splits"][split]["items"]

    def items_at(self, split: str, indices: Tensor) -> Batch:
        if not self._read_alone(split):
            return super().items_at(split, indices)
        if split not in self._readers:
            self._readers[split] = self._checked_split(split)
        return self._readers[split].__getitems__(indices.tolist())

    def split_batches(self, split: str) -> Iterator[Batch]:
        if not self._read_alone(split):
            yield from super().split_batches(split)
            return
        self._check(split)
        yield from self._blocks(split)

    def _blocks(self, split: str) -> Iterator[Batch]:
        """The whole prepared `split` in its stored order, in blocks of STREAM_BLOCK items read by index."""
        stored, size = PreparedSplit(self.data_dir / split), self.manifest["splits"][split]["items"]
        for start in range(0, size, STREAM_BLOCK):
            yield stored.__getitems__(list(range(start, min(start + STREAM_BLOCK, size))))

    @functools.cached_property
    def _readers(self) -> dict[str, PreparedSplit]:
        """One reader a split for `items_at`, which a training loop calls a batch at a time."""
        return {}

    @functools.cached_property
    def _checked(self) -> set[str]:
        """The splits found to be the data their manifest records."""
        return set()

    def _check(self, split: str) -> None:
        """Before val or test is first read, checked against the manifest (`_checked_read`)."""
        if split != "train" and split not in self._checked:
            self._checked_read(split)

    def _checked_read(self, split: str, held: bool = False) -> tuple[Tensor | None, Tensor]:
        """The whole `split` read in blocks in stored order, alike in every process, and checked against the
        manifest's SHA-256: a run uses only the data it records. Its items (`held`, else None) and labels."""
        content = SplitHash(self.manifest["splits"][split]["items"])
        items = [block for block, _ in content.passing(self._blocks(split)) if held]
        if content.hexdigest() != self.manifest["splits"][split]["sha256"]:
            raise DataError(f"{self.data_dir / split} is not the data its manifest records; prepare it again")
        self._checked.add(split)
        return torch.cat(items) if held else None, torch.cat(content.labels)

    def content_sha256(self, split: str) -> str:
        if split == "train" and self.train_size is not None:
            return super().content_sha256(split)
        return self.manifest["splits"][split]["sha256"]

    def full_training_sha256(self) -> str:
        return self.manifest["splits"]["train"]["sha256"]

    def train_dataloader(self, pool: Path | None = None) -> Any:
        """The train split streamed: shuffled by the run seed at every epoch, each process (and each of its
        workers) reading its own share, full batches only; with the prepared folder of an offline augmentation
        `pool`, the split and the pool in one stream, each batch drawn from both by their sizes, each of them
        giving each process the items of whole batches; a `train_size` subset is held in memory."""
        if self.train_size is not None:
            return super().train_dataloader()
        self.check_batch_fits()
        # One item decoded at a time: 316 MNIST batches of 64 a second on one CPU thread, LitData's default 28
        sources = [
            StreamingDataset(str(folder), shuffle=True, drop_last=True, seed=self.seed, batch_decode=False)
            for folder in [self.data_dir / "train", *([pool] if pool is not None else [])]
        ]
        if self.trainer is not None:
            # The run's processes and nodes as the Trainer knows them: LitData's own guess takes every CPU
            # process for one node, and its nodes read apart from each other.
            run = self.trainer
            for source in sources:
                source.distributed_env = _DistributedEnv(run.world_size, run.global_rank, run.num_nodes)
        if pool is None:
            dataset, workers = sources[0], self.num_workers
        else:
            # Read in the training process: LitData's combined stream keeps one count per source for all its
            # workers, which a resumed epoch shares out as if they took whole batches in turn, wrongly.
            dataset, workers = CombinedStreamingDataset(sources, seed=self.seed, iterate_over_all=True), 0
        return EpochStream(
            dataset,
            batch_size=self.batch_size_per_device,
            num_workers=workers,
            collate_fn=stack_items,
            # The workers' base seed, drawn as the in-memory loaders' is (`loader_over`).
            generator=generator(self.seed, "loader"),
        )

    def val_dataloader(self) -> DataLoader:
        """val read by index a batch at a time, in order, each process its share, as the in-memory loader."""
        return self.batches_of(self._checked_split("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self.batches_of(self._checked_split("test"), train=False)

    def _checked_split(self, split: str) -> PreparedSplit:
        """The prepared `split` to read by index, val and test once checked (`_check`)."""
        self._check(split)
        return PreparedSplit(self.data_dir / split)


class EpochStream(StreamingDataLoader):
    """LitData's loader, whose resumed epoch ends with its last batch: Lightning never asks for the one past
    it, and a resumed LitData loader replays the rest of its epoch unless its iteration ended."""

    def __iter__(self) -> Iterator[Batch]:
        for batch in super().__iter__():
            # A stream counts its items in one total, a combined stream per worker and source.
            counts = self._num_samples_yielded_wrapper.values()
            if self._num_samples_yielded_streaming + sum(map(sum, counts)) >= len(self) * self.batch_size:
                self.restore = False  # the pass is whole: the next one starts the next epoch
            yield batch


@functools.cache
def _streamed_class(module: type[InMemoryDataModule]) -> type[InMemoryDataModule]:
    return type(f"Streamed{module.__name__}", (StreamedSplits, module), {"__doc__": module.__doc__})


def streamed(
    name: str, module: type[InMemoryDataModule], data_dir: str | Path, given: dict[str, Any]
) -> tuple[type[InMemoryDataModule], dict[str, Any]]:
    """Dataset `name`'s DataModule reading the prepared folder `data_dir`, and its options: of series, those
    they were prepared with (they cut and scaled them), a `given` option of another value refused."""
    manifest = read_manifest(data_dir)
    if (dataset := manifest["dataset"]) != name:
        raise DataError(f"{data_dir} holds the prepared dataset {dataset}; use --data {dataset}")
    if module.data_kind != "sequence":
        return _streamed_class(module), given
    prepared = manifest["options"]
    for option, value in given.items():
        if prepared.get(option) != value:
            raise OptionError(
                option, f"{value!r}: {data_dir} was prepared with {prepared.get(option)!r}; drop it"
            )
    return _streamed_class(module), prepared

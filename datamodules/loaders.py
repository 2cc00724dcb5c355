"""How a split's tensors become batches: by indexing, not by B transforms, in an order that resumes (each
epoch's order a function of the run seed and the epoch alone, the position in it kept in checkpoints)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, TensorDataset

from lightning_genae.seeding import generator

Batch = tuple[Tensor, Tensor]


class InMemoryImages(TensorDataset):
    """A split held as (items, labels) tensors; `__getitems__` fetches a whole batch in one index."""

    def __getitems__(self, indices: list[int]) -> Batch:
        items, labels = self.tensors
        index = torch.as_tensor(indices, dtype=torch.long)
        return items[index], labels[index]


class EpochShuffle(Sampler[int]):
    """Each pass's order of n indices, a function of (seed, epoch) only, that can start part-way: a resumed
    run draws the batches an uninterrupted one would (RandomSampler's global stream would differ)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self.epoch, self.skip = 0, 0

    def begin(self, epoch: int, skip: int) -> None:
        """The next pass is epoch `epoch`'s order without its first `skip` indices."""
        self.epoch, self.skip = epoch, skip

    def order(self, epoch: int) -> Tensor:
        return torch.randperm(self.size, generator=generator(self.seed, "epoch order", epoch))

    def __len__(self) -> int:
        return self.size

    def __iter__(self):  # noqa: ANN204 - a generator of indices, as Sampler's own
        yield from self.order(self.epoch)[self.skip :].tolist()


class EpochPosition:
    """Which epoch of the training data a loader is in and how many of its batches it has handed out, kept
    in every checkpoint (a stateful loader); shared by both loaders, so either resumes the other."""

    _position: tuple[int, int] | None = None

    def _start_pass(self, batches: int) -> tuple[int, int]:
        """(epoch, batches already done) of the pass about to start: the next epoch, or the rest of this."""
        epoch, done = self._position or (0, 0)
        if self._position is not None and done >= batches:
            epoch, done = epoch + 1, 0
        self._position = (epoch, done)
        return epoch, done

    def state_dict(self) -> dict[str, int]:
        epoch, done = self._position or (0, 0)
        return {"epoch": epoch, "batches": done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._position = (int(state_dict["epoch"]), int(state_dict["batches"]))


class ResumableLoader(EpochPosition, DataLoader):
    """The host training loader, resuming where a checkpoint's run stopped, also part-way through an epoch."""

    def __iter__(self):  # noqa: ANN204 - the DataLoader's iterator, counted
        epoch, done = self._start_pass(len(self))
        assert self.batch_size is not None
        if isinstance(self.sampler, EpochShuffle):
            # Full batches only (drop_last), so `done` batches used done x batch size indices of the order.
            self.sampler.begin(epoch, done * self.batch_size)
        for batch in super().__iter__():
            done += 1
            self._position = (epoch, done)
            yield batch


class DeviceBatches(EpochPosition):
    """The training batches of a split held on the device, one index of it per batch: those `ResumableLoader`
    over `EpochShuffle` gives; under DDP every rank takes its share of each global batch of one order."""

    def __init__(
        self,
        items: Tensor,
        labels: Tensor,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.items, self.labels = items, labels
        # Per device, as a DataLoader's batch_size is.
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.shuffle = EpochShuffle(len(items), seed)

    @property
    def dataset(self) -> InMemoryImages:
        """The items batched, as a DataLoader's `dataset`: code that asks the loader for its data works."""
        return InMemoryImages(self.items, self.labels)

    def __len__(self) -> int:
        return len(self.items) // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[Batch]:
        epoch, done = self._start_pass(len(self))
        order = self.shuffle.order(epoch).to(self.items.device)
        global_batch = self.batch_size * self.world_size
        for batch in range(done, len(self)):
            start = batch * global_batch + self.rank * self.batch_size
            index = order[start : start + self.batch_size]
            self._position = (epoch, batch + 1)
            yield self.items[index], self.labels[index]


def collate_batch(batch: Batch) -> Batch:
    """The batch `__getitems__` fetched, as it is: the default collation would stack its tensors again."""
    return batch

"""Random streams kept in checkpoints, so a resumed run draws as an uninterrupted one; seeded evaluations."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lightning_genae.seeding import int_seed


def global_random_state() -> dict[str, Any]:
    """The state of every global generator, as tensors and plain values."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (
            str(kind),
            torch.from_numpy(keys.astype(np.int64)),
            int(position),
            int(has_gauss),
            float(cached_gaussian),
        ),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_random_state(state: dict[str, Any]) -> None:
    """Put every global generator back where `global_random_state` found it."""
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class RandomStateInCheckpoints(Callback):
    """The global random state in each checkpoint, restored when training resumes: every rank's under DDP,
    each rank taking its own back (on another number of processes, the ranks keep SeedPerRank's streams)."""

    _world_size = 1
    _restored: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._world_size = trainer.world_size

    def state_dict(self) -> dict[str, Any]:
        state = global_random_state()
        if self._world_size == 1:
            return state
        # Every rank writes a checkpoint's contents at once (Lightning's save_checkpoint), rank 0 the file.
        ranks: list[Any] = [None] * self._world_size
        torch.distributed.all_gather_object(ranks, state)
        return {"ranks": ranks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning restores callback states before on_fit_start; restoring here comes after every seeding.
        restored, self._restored = self._restored, None
        if restored is None:
            return
        ranks = restored.get("ranks")
        if ranks is None and trainer.world_size == 1:
            set_global_random_state(restored)
        elif ranks is not None and len(ranks) == trainer.world_size:
            set_global_random_state(ranks[trainer.global_rank])


class SeededEvaluation(Callback):
    """Every validation and test starts from the run seed's "evaluation" stream, the streams restored after,
    so evaluations depend on the weights and seed alone and never move the training's draws."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.validated_at: int | None = None
        self._outside_state: dict[str, Any] | None = None

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._outside_state = global_random_state()
        pl.seed_everything(int_seed(self.seed, "evaluation"), workers=True, verbose=False)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._outside_state is not None:
            set_global_random_state(self._outside_state)
            self._outside_state = None

    on_validation_start = on_test_start

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.on_test_end(trainer, pl_module)
        if trainer.state.fn == "fit":
            self.validated_at = trainer.global_step

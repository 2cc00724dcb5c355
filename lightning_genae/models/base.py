"""What every model family shares: the small interface tools rely on, step counting, divergence guard.

Callbacks, metrics and the augmentation never look at a model's class. They ask whether it is an
`Autoencoder` (encode/decode/reconstruct) or a `Sampler` (sample), the way pythae's samplers work on
any model.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_genae.errors import TrainingDiverged


@runtime_checkable
class Autoencoder(Protocol):
    """A model with a latent space reachable from images."""

    latent_dim: int

    def encode(self, images: Tensor) -> Tensor: ...

    def decode(self, latents: Tensor) -> Tensor: ...

    def reconstruct(self, images: Tensor) -> Tensor: ...


@runtime_checkable
class Sampler(Protocol):
    """A model that generates new images from its prior."""

    latent_dim: int

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...


class GenerativeModule(pl.LightningModule):
    """Base LightningModule: images are [B,C,H,W] floats in [-1, 1]; batches are (images, labels)."""

    # Lightning's global_step counts optimizer.step() calls; a GAN makes two per training iteration.
    optimizer_steps_per_iteration: ClassVar[int] = 1
    # Adversarial models toggle one network off per backward, which DDP must be told about.
    adversarial: ClassVar[bool] = False
    # Headline validation metric that picks the best checkpoint; a family without a validation objective
    # (the GAN) gets the generative metric the run computes, set per instance by the training set-up.
    monitor: str | None = "val/loss"
    monitor_mode: ClassVar[str] = "min"

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim

    @property
    def iteration(self) -> int:
        """Training iterations done so far (one D and one G update count as one for a GAN)."""
        if self._trainer is None:
            return 0
        return self.trainer.global_step // self.optimizer_steps_per_iteration

    def _log_evaluation_step(self) -> None:
        # Lightning would log evaluation at the index of the batch before it; "step" overrides that so a
        # validation row at step N means "after N training iterations" in every logger.
        self.log("step", float(self.iteration), on_step=False, on_epoch=True, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation_step()

    def on_test_epoch_end(self) -> None:
        self._log_evaluation_step()

    def prior_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal latents; drawn on the CPU so a seeded generator gives the same noise anywhere."""
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device)

    def ensure_finite(self, **losses: Tensor) -> None:
        """Stop before a NaN/inf loss is back-propagated, so saved weights stay finite."""
        for name, value in losses.items():
            if not torch.isfinite(value).all():
                raise TrainingDiverged(
                    f"{name} became {value.float().mean().item()} at step {self.iteration}; "
                    "lower --lr (or use --precision 32-true if training in 16-bit) and resume from "
                    "the last checkpoint, which holds the weights from before the divergence"
                )

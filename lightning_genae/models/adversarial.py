"""The base of families that train a generator against a discriminator of images (gan, and next began).

What they share is how they are trained, not their losses: manual optimization with one optimizer per
network, each update toggling its optimizer so the other network gets no gradients (DDP is told to expect
that through `adversarial`), and the discriminator-side augmentation given when the module is built.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from torch import Tensor

from lightning_genae.models.base import DiscriminatorAugmentation, GenerativeModule


class ImageAdversarialModule(GenerativeModule):
    """A GenerativeModule that is an `ImageDiscriminator`; subclasses build their networks and steps."""

    optimizer_steps_per_iteration = 2
    adversarial = True
    # No validation objective: the training set-up uses the generative metric it computes instead.
    monitor = None

    def __init__(
        self,
        image_shape: tuple[int, int, int] | list[int],
        *,
        discriminator_augmentation: DiscriminatorAugmentation | None = None,
        **options: Any,
    ) -> None:
        super().__init__(image_shape, **options)
        self.automatic_optimization = False
        # A plain callable, not a child module: the frozen augmenter it may hold must stay out of the
        # checkpoint, the optimizers and DDP's parameter bookkeeping. Not a hyper-parameter either: a
        # checkpoint rebuilt for evaluation needs no training-time augmentation.
        self.discriminator_augmentation = discriminator_augmentation

    def discriminator_input(self, images: Tensor) -> Tensor:
        """`images` as the discriminator is shown them: augmented when the run augments its inputs."""
        if self.discriminator_augmentation is None:
            return images
        return self.discriminator_augmentation(images)

    @abstractmethod
    def evaluation_step(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        """Log held-out statistics for `stage` (val or test); the run adds the generative metrics."""

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.evaluation_step(batch, "test")

"""The base of families that train a generator against a discriminator of images (gan, began, vaegan): manual
optimization, each update toggling its network's optimizer, and the discriminator-side augmentation."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_genae.models.base import ObjectiveModule, adam, inference
from lightning_genae.models.options import GanLoss
from lightning_genae.models.protocols import (
    DiscriminatorAugmentation,
    DiscriminatorScores,
    StrengthController,
)

# Where a checkpoint keeps the state of ADA's controller (p, its accumulators, the last r_t).
STRENGTH_KEY = "adaptive_strength"


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: GanLoss = "ns") -> Tensor:
    """D's loss on logits: non-saturating (`ns`, the cross-entropy of real against fake) or `hinge`."""
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor, kind: GanLoss = "ns") -> Tensor:
    """The generator's loss on D's logits of its fakes, of the same `kind`."""
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()


class ImageAdversarialModule(ObjectiveModule):
    """An `ImageDiscriminator` family; subclasses build their nets, training step and `model_step`."""

    optimizer_steps_per_iteration = 2
    adversarial = True
    # No validation objective: the training set-up uses the generative metric it computes instead.
    monitor = None
    # Whether its discriminator gives one real/fake logit per image and passes each step's real logits to
    # `observe_real_logits`, which ADA's controller reads (BEGAN's gives reconstruction energies instead).
    gives_real_logits: ClassVar[bool] = False

    def __init__(
        self,
        image_shape: tuple[int, int, int] | list[int],
        *,
        discriminator_augmentation: DiscriminatorAugmentation | None = None,
        adaptive_strength: StrengthController | None = None,
        **options: Any,
    ) -> None:
        if adaptive_strength is not None and not self.gives_real_logits:
            # resolve() refuses this for run.py; built directly, p would stay 0 without a word.
            raise ValueError(f"{type(self).__name__} gives ADA's controller no real logits to steer p by")
        super().__init__(image_shape, **options)
        self.automatic_optimization = False
        # A plain callable, not a child module: the frozen augmenter it may hold must stay out of the
        # checkpoint, the optimizers and DDP's parameter bookkeeping. Not a hyper-parameter either: a
        # checkpoint rebuilt for evaluation needs no training-time augmentation.
        self.discriminator_augmentation = discriminator_augmentation
        # ADA's controller (`--augment-p auto`): a plain attribute too; on_save_checkpoint saves its state.
        self.adaptive_strength = adaptive_strength

    def discriminator_input(self, images: Tensor) -> Tensor:
        """`images` as the discriminator is shown them: augmented when the run augments its inputs."""
        if self.discriminator_augmentation is None:
            return images
        return self.discriminator_augmentation(images)

    def discriminate(self, images: Tensor) -> Tensor:
        """Discriminator logits of images as the discriminator is shown them (augmented, if the run does)."""
        return self.discriminator(self.discriminator_input(images))

    def discriminator_scores(self, images: Tensor) -> DiscriminatorScores:
        """D's logit of each image as given, without the run's augmentation."""
        return DiscriminatorScores(self.discriminator(images), "logit")

    @inference
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(self.prior_noise(n, generator))

    def training_noise(self, n: int) -> Tensor:
        return self.draw_prior(n, None, self.device)

    def adam_for(self, network: torch.nn.Module) -> torch.optim.Optimizer:
        """Adam with DCGAN's beta1 = 0.5, which keeps the adversarial game from oscillating."""
        return adam(network.parameters(), lr=self.options.lr, betas=(0.5, 0.999))

    def observe_real_logits(self, real_logits: Tensor) -> None:
        """Feed one discriminator step's real logits to ADA's controller, if the run has one, and log p (as
        tensors: no wait for the device). Called after D's update: p may be in the graph it differentiated."""
        if self.adaptive_strength is None:
            return
        self.adaptive_strength.observe(real_logits.detach())
        self.log_training(
            {"train/augment_p": self.adaptive_strength.p, "train/ada_rt": self.adaptive_strength.rt}
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.adaptive_strength is not None:
            checkpoint[STRENGTH_KEY] = self.adaptive_strength.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.adaptive_strength is not None and STRENGTH_KEY in checkpoint:
            self.adaptive_strength.load_state_dict(checkpoint[STRENGTH_KEY])

"""DCGAN with non-saturating or hinge loss, manual optimization and an optional generator EMA.

One training iteration is one discriminator update followed by one generator update. Each update
toggles its optimizer, so the other network's parameters get no gradients; under DDP the strategy is
built with `find_unused_parameters=True` for adversarial models (see `adversarial`), which is what
makes this correct there. `manual_backward` and the LightningOptimizer step go through Lightning's
precision plugin, so 16-bit mixed precision scales both losses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lightning_genae.models.adversarial import ImageAdversarialModule
from lightning_genae.models.base import DiscriminatorScores, adam
from lightning_genae.models.options import GanLoss, GANOptions
from lightning_genae.nets import (
    ConvDecoder,
    ConvDiscriminator,
    MaxoutDiscriminator,
    MLPDecoder,
    init_dcgan_weights,
    init_uniform,
)

# The GAN paper's MNIST generator: two hidden ReLU layers of this many units.
PAPER_GENERATOR_HIDDEN = 1200


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: GanLoss) -> Tensor:
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor, kind: GanLoss) -> Tensor:
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()


class GANModule(ImageAdversarialModule):
    """DCGAN generator (the shared conv decoder) against the shared conv discriminator, or with
    `--gan-nets paper` the GAN paper's fully connected MNIST nets."""

    gives_real_logits = True

    options_type = GANOptions
    options: GANOptions

    def __init__(self, image_shape: tuple[int, int, int] | list[int], **options: Any) -> None:
        # `discriminator_augmentation` travels in `options` to ImageAdversarialModule.
        super().__init__(image_shape, **options)
        if self.options.gan_nets == "paper":
            # goodfeli/adversarial mnist.yaml: weights U(-irange, irange). Its generator's output biases start
            # at the logits of the training pixels' means; here they start at 0.
            self.generator = MLPDecoder(self.image_shape, self.latent_dim, hidden=PAPER_GENERATOR_HIDDEN)
            self.discriminator = MaxoutDiscriminator(self.image_shape)
            self.generator.apply(init_uniform(0.05))
            self.discriminator.apply(init_uniform(0.005))
        else:
            width = self.options.width
            self.generator = ConvDecoder(self.image_shape, self.latent_dim, width=width, output="tanh")
            self.discriminator = ConvDiscriminator(
                self.image_shape, width=width, spectral_norm=self.options.spectral_norm
            )
            self.generator.apply(init_dcgan_weights)
            if not self.options.spectral_norm:
                self.discriminator.apply(init_dcgan_weights)
        self.generator_ema: AveragedModel | None = None
        if self.options.ema > 0:
            # Weights are averaged; batch-norm statistics are copied from the live generator in
            # `update_ema`, since an average of running averages lags far behind them.
            self.generator_ema = AveragedModel(
                self.generator, multi_avg_fn=get_ema_multi_avg_fn(self.options.ema), use_buffers=False
            )
            # The average is not trained: keep it out of DDP's gradient bookkeeping.
            self.generator_ema.requires_grad_(False)

    def discriminate(self, images: Tensor) -> Tensor:
        """Discriminator logits of images as the discriminator is shown them (augmented, if the run does)."""
        return self.discriminator(self.discriminator_input(images))

    def discriminator_scores(self, images: Tensor) -> DiscriminatorScores:
        """D's logit of each image as given, without the run's augmentation."""
        return DiscriminatorScores(self.discriminator(images), "logit")

    def decode(self, latents: Tensor) -> Tensor:
        """Generator output; the EMA generator when one is kept, as is usual for evaluation."""
        generator = self.generator_ema if self.generator_ema is not None else self.generator
        return generator(latents)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(self.prior_noise(n, generator))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real, _ = batch
        kind = self.options.gan_loss
        opt_d, opt_g = self.optimizers()
        n = real.size(0)

        with self.toggled_optimizer(opt_d):
            with torch.no_grad():
                fake = self.generator(torch.randn(n, self.latent_dim, device=self.device))
            real_logits = self.discriminate(real)
            fake_logits = self.discriminate(fake)
            loss_d = discriminator_loss(real_logits, fake_logits, kind)
            self.watch_losses(**{"train/loss_d": loss_d})
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            opt_d.step()
            self.observe_real_logits(real_logits)

        with self.toggled_optimizer(opt_g):
            fake = self.generator(torch.randn(n, self.latent_dim, device=self.device))
            loss_g = generator_loss(self.discriminate(fake), kind)
            self.watch_losses(**{"train/loss_g": loss_g})
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            opt_g.step()

        self.update_ema()

        self.log_training({"train/loss_d": loss_d.detach(), "train/loss_g": loss_g.detach()}, prog_bar=True)
        self.log_training(
            {"train/d_real": real_logits.detach().mean(), "train/d_fake": fake_logits.detach().mean()}
        )

    def evaluation_step(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        # D's mean logit on held-out reals. Not comparable with train/d_real (augmented inputs, batch norm in
        # training mode); the overfitting signal is val/d_logit_train against val/d_logit_val.
        real, _ = batch
        self.log_split_means({f"{stage}/d_real": self.discriminator(real).mean()}, len(real))

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.generator_ema is None:
            return
        self.generator_ema.update_parameters(self.generator)
        for averaged, live in zip(self.generator_ema.module.buffers(), self.generator.buffers(), strict=True):
            averaged.copy_(live)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        # DCGAN's Adam settings; beta1 = 0.5 keeps the adversarial game from oscillating.
        betas = (0.5, 0.999) if self.options.gan_loss == "ns" else (0.0, 0.9)
        opt_d = adam(self.discriminator.parameters(), lr=self.options.lr, betas=betas)
        opt_g = adam(self.generator.parameters(), lr=self.options.lr, betas=betas)
        return [opt_d, opt_g]

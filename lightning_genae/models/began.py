"""BEGAN and EBGAN: a generator against an autoencoder discriminator, whose energy of an image is its
per-pixel mean absolute reconstruction error L.

- `--d-loss began` (Berthelot et al. 2017): D minimises L(x) - k_t L(G(z)), G minimises L(G(z)); k_t moves by
  `--began-lambda-k` (gamma L(x) - L(G(z))) each step, clipped to [0, 1].
- `--d-loss ebgan` (Zhao et al. 2017): D minimises L(x) + relu(margin - L(G(z))) per fake, G L(G(z)) plus
  the pulling-away term; the energy is BEGAN's (the paper's is squared), so the margin is on that scale.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_genae.models.adversarial import ImageAdversarialModule
from lightning_genae.models.options import BEGANOptions
from lightning_genae.models.protocols import DiscriminatorScores
from lightning_genae.nets.began import BEGANAutoencoder, BEGANDecoder, init_began_weights
from lightning_genae.nets.conv import ConvAutoencoder, ConvDecoder, init_dcgan_weights


def reconstruction_energy(reconstructions: Tensor, images: Tensor) -> Tensor:
    """Per-image energy: the mean absolute error over pixels (images in [-1, 1], so energies in [0, 2])."""
    return (reconstructions.float() - images.float()).abs().flatten(1).mean(1)


def ebgan_discriminator_loss(real_energy: Tensor, fake_energies: Tensor, margin: float) -> Tensor:
    """EBGAN's D loss, L(x) + [margin - L(G(z))]+ with the hinge per fake, then averaged (Zhao et al. 2017,
    eq. 1): on the batch's mean energy, fakes below the margin would go unpushed once the mean reached it."""
    return real_energy + F.relu(margin - fake_energies).mean()


def pulling_away_term(codes: Tensor) -> Tensor:
    """EBGAN's pulling-away term (Zhao et al. 2017, eq. 5): the mean squared cosine similarity over distinct
    pairs of a batch's codes (0 orthogonal, 1 aligned), which spreads the fakes out in D's code space."""
    n = codes.size(0)
    unit = F.normalize(codes.float().flatten(1), dim=1)
    cosines = unit @ unit.t()
    off_diagonal = cosines.pow(2).sum() - cosines.diagonal().pow(2).sum()
    return off_diagonal / (n * (n - 1))


class BEGANModule(ImageAdversarialModule):
    """The shared conv decoder as generator against an autoencoder (shared encoder + decoder) as D."""

    options_type = BEGANOptions
    options: BEGANOptions

    def items_needed_per_batch(self) -> tuple[int, str] | None:
        if self.options.d_loss == "ebgan" and self.options.ebgan_pt > 0:
            return 2, "pulling-away term (ebgan_pt), which compares a batch's codes with each other,"
        return None

    def __init__(self, image_shape: tuple[int, int, int] | list[int], **options: Any) -> None:
        super().__init__(image_shape, **options)
        width = self.options.width
        if self.options.began_nets == "began":
            skips = self.options.began_skip_connections
            self.generator = BEGANDecoder(self.image_shape, self.latent_dim, width, skip_connections=skips)
            self.discriminator = BEGANAutoencoder(
                self.image_shape, self.latent_dim, width, skip_connections=skips
            )
            self.generator.apply(init_began_weights)
            self.discriminator.apply(init_began_weights)
        else:
            self.generator = ConvDecoder(self.image_shape, self.latent_dim, width=width, output="tanh")
            self.discriminator = ConvAutoencoder(self.image_shape, self.latent_dim, width=width)
            self.generator.apply(init_dcgan_weights)
            self.discriminator.apply(init_dcgan_weights)
        # BEGAN's control variable: a buffer, so it is checkpointed, resumed and the same on every rank.
        self.register_buffer("k", torch.zeros(()))

    def decode(self, latents: Tensor) -> Tensor:
        # No output activation, as in the paper; shown and scored images are clipped as its code clips them.
        return self.generator(latents).clamp(-1.0, 1.0)

    def draw_prior(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """n latents from the prior: BEGAN's z ~ U(-1, 1) with its own nets, N(0, 1) with the shared ones."""
        if self.options.began_nets == "began":
            return torch.rand(n, self.latent_dim, generator=generator, device=device) * 2 - 1
        return super().draw_prior(n, generator, device)

    def energy(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(per-image energy, D's codes) of images as the discriminator is shown them."""
        shown = self.discriminator_input(images)
        reconstructions, codes = self.discriminator(shown)
        return reconstruction_energy(reconstructions, shown), codes

    def objective_form(self) -> str | None:
        if self.options.d_loss == "ebgan":
            return "EBGAN's margin hinge per fake"
        return "k_t moved by both energies of D's step"

    def discriminator_scores(self, images: Tensor) -> DiscriminatorScores:
        """D's energy of each image as given, without the run's augmentation."""
        return DiscriminatorScores(reconstruction_energy(self.discriminator(images)[0], images), "energy")

    @torch.no_grad()
    def discriminator_reconstructions(
        self, real: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Real images, D's reconstructions of them, fakes from seeded noise, D's reconstructions of those."""
        fake = self.sample(real.size(0), generator)
        return {
            "real": real,
            "real_reconstruction": self.discriminator(real)[0],
            "fake": fake,
            "fake_reconstruction": self.discriminator(fake)[0],
        }

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real, _ = batch
        o = self.options
        opt_d, opt_g = self.optimizers()
        n = real.size(0)

        with self.toggled_optimizer(opt_d):
            with torch.no_grad():
                fake = self.generator(self.training_noise(n))
            real_energy = self.energy(real)[0].mean()
            fake_energies = self.energy(fake)[0]
            # Both energies of k_t's balance and of M_global are D's before its step, as in the paper's
            # update (its reference code takes them from one forward pass); G's step sees a moved D.
            balanced = (real_energy.detach().float(), fake_energies.mean().detach().float())
            if o.d_loss == "began":
                loss_d = real_energy - self.k * fake_energies.mean()
            else:
                loss_d = ebgan_discriminator_loss(real_energy, fake_energies, o.ebgan_margin)
            self.manual_update(opt_d, "train/loss_d", loss_d)

        with self.toggled_optimizer(opt_g):
            fake = self.generator(self.training_noise(n))
            energies, codes = self.energy(fake)
            loss_g = energies.mean()
            if o.d_loss == "ebgan" and o.ebgan_pt > 0:
                loss_g = loss_g + o.ebgan_pt * pulling_away_term(codes)
            self.manual_update(opt_g, "train/loss_g", loss_g)

        real_energy, fake_energy = balanced
        own_balance = o.began_gamma * real_energy - fake_energy
        # gamma L(x) - L(G(z)): averaged over ranks, so k_t moves alike on every one of them.
        balance = self.trainer.strategy.reduce(own_balance, reduce_op="mean")
        if o.d_loss == "began":
            self.k.add_(o.began_lambda_k * balance).clamp_(0.0, 1.0)
        self.log_training({"train/loss_d": loss_d.detach(), "train/loss_g": loss_g.detach()}, prog_bar=True)
        self.log_training(
            {
                "train/k": self.k.clone(),
                # Of this rank's batch, as every training value logged (one process: the same number).
                "train/m_global": real_energy + own_balance.abs(),
                "train/d_real_energy": real_energy,
                "train/d_fake_energy": fake_energy,
            },
        )

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        # D's energy on held-out reals. Not comparable with train/d_real_energy (augmented inputs, batch norm
        # in training mode); the overfitting signal is val/d_energy_train against val/d_energy_val.
        real, _ = batch
        energy = reconstruction_energy(self.discriminator(real)[0], real).mean()
        self.log_split_means({f"{stage}/d_real_energy": energy}, len(real))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.adam_for(self.discriminator), self.adam_for(self.generator)]  # both papers' settings

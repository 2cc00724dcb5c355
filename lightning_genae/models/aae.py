"""Adversarial autoencoder (Makhzani et al. 2015): an autoencoder whose codes a latent discriminator pushes
toward a prior. One iteration makes three updates: (1) encoder and decoder on reconstruction; (2) the
discriminator, prior draws against phase 1's codes; (3) the encoder, to pass its codes for prior draws.
Updates 1 and 3 share one Adam, so each moves the encoder in proportion to its gradient as the paper's SGD
does (a second Adam let the codes drift off the prior); docs/models.md has the details."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.core.optimizer import LightningOptimizer
from torch import Tensor, nn

from lightning_genae.errors import ConfigError
from lightning_genae.metrics.code_prior import CodeGaussianKL
from lightning_genae.models.adversarial import discriminator_loss, generator_loss
from lightning_genae.models.base import adam, inference, set_sgd_rate
from lightning_genae.models.options import AAE_PAPER_HIDDEN, AAEOptions
from lightning_genae.models.reconstruction import ReconstructionModule, reconstruction_loss
from lightning_genae.nets.mlp import LatentDiscriminator, MLPDecoder, MLPEncoder, init_linear

# Mixture components are unit-variance Gaussians with means this far out along distinct axes: any two are
# 5.7 standard deviations apart or more, so under 0.3% of a component's mass lies nearer another's mean.
MIXTURE_RADIUS = 4.0
# The latent discriminator's hidden width per unit of --width (512 at the default width 64).
DISCRIMINATOR_HIDDEN_PER_WIDTH = 8
# `--aae-training paper` (appendix A.1): the weights' initial standard deviation, each phase's SGD
# (learning rate, momentum), and the epoch after which every rate is divided by PAPER_RATE_DROP.
PAPER_INIT_STD = 0.01
PAPER_RECONSTRUCTION_SGD = (0.01, 0.9)
PAPER_REGULARISATION_SGD = (0.1, 0.1)
PAPER_RATE_DROP_EPOCH, PAPER_RATE_DROP = 50, 10.0


def paper_rates(epoch: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(reconstruction, regularisation) phases' (learning rate, momentum) during epoch `epoch` (from 0)."""
    scale = 1.0 if epoch < PAPER_RATE_DROP_EPOCH else 1 / PAPER_RATE_DROP
    (lr_rec, m_rec), (lr_reg, m_reg) = PAPER_RECONSTRUCTION_SGD, PAPER_REGULARISATION_SGD
    return (lr_rec * scale, m_rec), (lr_reg * scale, m_reg)


def mixture_means(components: int, latent_dim: int, radius: float = MIXTURE_RADIUS) -> Tensor:
    """Component means [components, latent_dim]: radius * e_k along the axes, then radius * -e_k, so every
    pair lies radius * sqrt(2) or more apart (the paper's 2-D prior puts ten on a circle)."""
    axes = torch.eye(latent_dim)
    return radius * torch.cat([axes, -axes])[:components]


class AAEModule(ReconstructionModule):
    """An encoder and decoder (shared conv nets, or `--aae-nets paper`'s MLPs) regularised by a latent D."""

    options_type = AAEOptions
    options: AAEOptions
    optimizer_steps_per_iteration = 3
    adversarial = True
    # Chosen on the generative metric: val/loss (reconstruction) improves as well when codes ignore the prior.
    monitor = None

    def __init__(self, image_shape: tuple[int, int, int] | list[int], **options: Any) -> None:
        super().__init__(image_shape, **options)
        self.automatic_optimization = False
        latent_dim, opts = self.latent_dim, self.options
        # Supervised: a one-hot of the component, plus one slot for "unlabelled" (label -1), as in the
        # paper's semi-supervised variant where unlabelled codes may land on any component.
        condition_dim = opts.aae_components + 1 if opts.aae_supervised else 0
        paper = opts.aae_nets == "paper"
        hidden, negative_slope = (
            (AAE_PAPER_HIDDEN, 0.0) if paper else (DISCRIMINATOR_HIDDEN_PER_WIDTH * opts.width, 0.2)
        )
        self.latent_discriminator = LatentDiscriminator(
            latent_dim, hidden=hidden, condition_dim=condition_dim, negative_slope=negative_slope
        )
        if self.paper_training:
            for net in (self.encoder, self.decoder, self.latent_discriminator):
                net.apply(init_linear("normal", PAPER_INIT_STD))
        mixture = opts.aae_prior == "mixture"
        means = mixture_means(opts.aae_components, latent_dim) if mixture else torch.zeros(1, latent_dim)
        # In units of the prior's standard deviation (prior_draws scales them); rebuilt from the options.
        self.register_buffer("prior_means", means, persistent=False)
        centred = means - means.mean(0)
        std = opts.aae_prior_std
        prior_covariance = std**2 * (torch.eye(latent_dim) + centred.T @ centred / len(means))
        means = std * means
        self.code_kl = nn.ModuleDict(
            {stage: CodeGaussianKL(means.mean(0), prior_covariance) for stage in ("val", "test")}
        )

    @property
    def paper_training(self) -> bool:
        return self.options.aae_training == "paper"

    @property
    def decoder_output(self) -> str:
        """The paper's training decodes through a sigmoid (shown on [-1, 1]); else as the autoencoders do."""
        return "sigmoid" if self.paper_training else super().decoder_output

    def autoencoder_nets(self) -> tuple[nn.Module, nn.Module]:
        """The shared conv nets, or --aae-nets paper's fully connected ones (reading [0, 1] pixels)."""
        if self.options.aae_nets == "conv":
            return super().autoencoder_nets()
        encoder = MLPEncoder(
            self.image_shape, self.latent_dim, hidden=AAE_PAPER_HIDDEN, unit_pixels=self.paper_training
        )
        decoder = MLPDecoder(
            self.image_shape, self.latent_dim, hidden=AAE_PAPER_HIDDEN, output=self.decoder_output
        )
        return encoder, decoder

    def prior_draws(
        self,
        n: int,
        generator: torch.Generator | None = None,
        components: Tensor | None = None,
    ) -> Tensor:
        """n codes from the prior (`--aae-prior-std` times the unit-variance one); `components` picks each
        draw's mixture component (else uniform). On the CPU with a seeded generator, so a seed reproduces."""
        device = self.device if generator is None else torch.device("cpu")
        noise = torch.randn(n, self.latent_dim, generator=generator, device=device)
        if components is None:
            components = torch.randint(len(self.prior_means), (n,), generator=generator, device=device)
        means = self.prior_means.to(device)[components.to(device)]
        return (self.options.aae_prior_std * (means + noise)).to(self.device)

    @inference
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decoded prior draws (for a mixture, from every component alike)."""
        return self.decode(self.prior_draws(n, generator))

    def conditioning(self, labels: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """(components of the prior draws, D's one-hot condition) for a batch; (None, None) unsupervised. An
        unlabelled item (-1) draws from any component, and its condition says so in the last slot."""
        if not self.options.aae_supervised:
            return None, None
        count = self.options.aae_components
        labelled = labels >= 0
        random_components = torch.randint(count, labels.shape, device=labels.device)
        components = torch.where(labelled, labels, random_components)
        slots = torch.where(labelled, labels, torch.full_like(labels, count))
        return components, F.one_hot(slots, count + 1)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if not self.options.aae_supervised:
            return
        # The number of classes, which sizes the prior's mixture, comes from the lightning_genae DataModule.
        classes = self.trainer.datamodule.num_classes
        if classes is None or classes > self.options.aae_components:
            raise ConfigError(
                f"aae_supervised: the data has {classes or 'no'} classes and aae_components is "
                f"{self.options.aae_components}; drop aae_supervised or give aae_components {classes} or more"
            )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        if self.paper_training:
            opt_autoencoder, opt_discriminator, opt_encoder = self.optimizers()
            self.follow_paper_schedule(opt_autoencoder, opt_discriminator, opt_encoder)
        else:
            opt_autoencoder, opt_discriminator = self.optimizers()
            opt_encoder = opt_autoencoder
        components, condition = self.conditioning(labels)
        codes, out, loss = self.reconstruction_phase(images, opt_autoencoder)
        if self.paper_training:
            # The paper's D judges the codes of the encoder its reconstruction phase stepped (SGD moves them
            # several percent at first, not the small step `discriminator_phase` allows for).
            with torch.no_grad():
                codes = self.encoder(images)
        prior_logits, code_logits, loss_d = self.discriminator_phase(
            codes.detach(), components, condition, opt_discriminator
        )
        loss_g = self.encoder_phase(images, condition, opt_encoder)
        self.log_training(
            {"train/loss": loss.detach(), "train/loss_d": loss_d.detach(), "train/loss_g": loss_g.detach()},
            prog_bar=True,
        )
        self.log_training(
            {
                "train/mse": F.mse_loss(self.as_image(out).detach(), images),
                "train/d_real": prior_logits.detach().mean(),
                "train/d_fake": code_logits.detach().mean(),
            },
        )

    def reconstruction_phase(
        self, images: Tensor, optimizer: LightningOptimizer
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Update 1; returns (codes, decoder output, loss per pixel). The paper's training steps on its
        Euclidean cost: the squared error of [0, 1] pixels summed per image (a quarter of it on [-1, 1])."""
        with self.toggled_optimizer(optimizer):
            codes = self.encoder(images)
            out = self.decoder(codes)
            per_image = reconstruction_loss(out, images, self.options.recon_loss).mean()
            loss = per_image / images[0].numel()
            self.manual_update(optimizer, "train/loss", loss, per_image / 4 if self.paper_training else None)
        return codes, out, loss

    def discriminator_phase(
        self,
        codes: Tensor,
        components: Tensor | None,
        condition: Tensor | None,
        optimizer: LightningOptimizer,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Update 2 on prior draws against `codes`, the reconstruction phase's (encoding again would cost a
        third encoder pass); returns (logits on the draws, logits on the codes, loss)."""
        with self.toggled_optimizer(optimizer):
            n = codes.size(0)
            prior_logits = self.latent_discriminator(self.prior_draws(n, components=components), condition)
            code_logits = self.latent_discriminator(codes, condition)
            # Non-saturating: prior draws are real, codes are fake.
            loss_d = discriminator_loss(prior_logits, code_logits)
            self.manual_update(optimizer, "train/loss_d", loss_d)
        return prior_logits, code_logits, loss_d

    def encoder_phase(
        self, images: Tensor, condition: Tensor | None, optimizer: LightningOptimizer
    ) -> Tensor:
        """Update 3: the encoder toward codes D takes for prior draws, at `--aae-adversarial-weight`, from a
        fresh encoder pass; the decoder is not in this graph, so the shared optimizer leaves it alone."""
        with self.toggled_optimizer(optimizer):
            loss_g = generator_loss(self.latent_discriminator(self.encoder(images), condition))
            weight = 1.0 if self.paper_training else self.options.aae_adversarial_weight
            self.manual_update(optimizer, "train/loss_g", loss_g, weight * loss_g)
        return loss_g

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, _ = batch
        codes = self.encode(images)
        out = self.decoder(codes)
        loss = reconstruction_loss(out, images, self.options.recon_loss).mean() / images[0].numel()
        recon = self.as_image(out)
        values = {f"{stage}/loss": loss, f"{stage}/mse": F.mse_loss(recon, images)}
        self.log_split_means(values, len(images), prog_bar=[f"{stage}/loss"])
        self.log_dict(self.reconstruction_quality.update(stage, recon, images), on_epoch=True)
        metric = self.code_kl[stage]
        metric.update(codes)
        self.log(f"{stage}/code_kl", metric, on_epoch=True)
        return loss

    def follow_paper_schedule(self, *optimizers: torch.optim.Optimizer) -> None:
        """Set this iteration's rates on the (reconstruction, discriminator, encoder) SGDs (set_sgd_rate)."""
        reconstruction, regularisation = paper_rates(self.iteration_epoch)
        for optimizer, (lr, momentum) in zip(
            optimizers, (reconstruction, regularisation, regularisation), strict=True
        ):
            set_sgd_rate(optimizer, lr, momentum)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        lr = self.options.lr
        autoencoder = [*self.encoder.parameters(), *self.decoder.parameters()]
        if self.paper_training:
            # Rates and momenta are set before every iteration (`follow_paper_schedule`).
            (lr_rec, m_rec), (lr_reg, m_reg) = paper_rates(0)
            return [
                torch.optim.SGD(autoencoder, lr=lr_rec, momentum=m_rec),
                torch.optim.SGD(self.latent_discriminator.parameters(), lr=lr_reg, momentum=m_reg),
                torch.optim.SGD(self.encoder.parameters(), lr=lr_reg, momentum=m_reg),
            ]
        # D: DCGAN's beta1 = 0.5, which keeps the game from oscillating; the autoencoder: Adam's defaults.
        discriminator = self.latent_discriminator.parameters()
        return [adam(autoencoder, lr=lr), adam(discriminator, lr=lr, betas=(0.5, 0.999))]

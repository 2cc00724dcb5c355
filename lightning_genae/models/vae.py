"""Variational autoencoder: Gaussian encoder, reparameterisation, analytic KL, beta and KL warm-up."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_genae.errors import ConfigError, DataError
from lightning_genae.metrics.likelihood import importance_sampled_log_likelihood
from lightning_genae.models.base import evaluation_mode, inference
from lightning_genae.models.batch import check_data
from lightning_genae.models.options import VAE_PAPER_HIDDEN, VAEOptions
from lightning_genae.models.reconstruction import ReconstructionModule, reconstruction_loss
from lightning_genae.models.variational import GaussianEncoding, gaussian_kl, reparameterize
from lightning_genae.nets.mlp import MLPDecoder, MLPEncoder, init_linear

# IWAE's decoder output biases start at the logits of the training pixel means clipped to [0.001, 0.999].
PAPER_MEANS_CLIP = 1e-3


class VAEModule(GaussianEncoding, ReconstructionModule):
    """VAE on recon + beta_t * KL, beta_t rising linearly to `beta` over `kl_warmup` steps; `bce` a Bernoulli
    likelihood, `mse` a Gaussian of variance 1/2 whose loss drops the constant that `val/elbo` keeps."""

    options_type = VAEOptions
    options: VAEOptions
    encoder_outputs_per_latent = 2

    def autoencoder_nets(self) -> tuple[nn.Module, nn.Module]:
        """The shared conv nets, or with --vae-nets paper Burda et al.'s (yburda/iwae): two hidden layers of
        200 tanh units each way, Glorot-uniform, the encoder reading [0, 1] pixels as the reference does."""
        if self.options.vae_nets == "conv":
            return super().autoencoder_nets()
        encoder = MLPEncoder(
            self.image_shape,
            self.encoder_outputs_per_latent * self.latent_dim,
            hidden=VAE_PAPER_HIDDEN,
            unit_pixels=True,
            activation=nn.Tanh,
        )
        decoder = MLPDecoder(
            self.image_shape,
            self.latent_dim,
            hidden=VAE_PAPER_HIDDEN,
            output=self.decoder_output,
            activation=nn.Tanh,
        )
        for net in (encoder, decoder):
            net.apply(init_linear("glorot"))
        return encoder, decoder

    def on_train_start(self) -> None:
        super().on_train_start()
        # Here, after a resume restored the step count: a resumed run keeps its trained output biases.
        if self.options.vae_nets == "paper" and self.trainer.global_step == 0:
            self.decoder.start_at_pixel_means(self.training_pixel_means(), clip=PAPER_MEANS_CLIP)

    @inference
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(self.prior_noise(n, generator))

    def log_likelihood(self, images: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """Importance-sampled log p(x) in nats per image [B] under the Bernoulli decoder, in eval mode
        whatever the module's (batch norm must not score an image by the statistics of the others)."""
        if self.options.recon_loss != "bce":
            raise ConfigError("log_likelihood needs the Bernoulli decoder (recon_loss='bce')")
        what = "log_likelihood's images"
        check_data(images, self.data_kind, self.data_shape, warn_scale=False, what=what)
        targets = ((images + 1) / 2).flatten(1)
        if not ((targets == 0) | (targets == 1)).all():
            raise DataError(f"{what} are not binary pixels read as -1 and 1; binarize them (binarized_mnist)")

        def log_likelihood(z: Tensor) -> Tensor:
            logits = self.decoder(z.flatten(0, 1).to(images.dtype)).flatten(1).double()
            repeated = targets.double().repeat(len(z), 1)
            per_image = -F.binary_cross_entropy_with_logits(logits, repeated, reduction="none").sum(1)
            return per_image.view(len(z), len(images))

        # Chunks of draws sized so one decoder call holds about 8,192 images.
        chunk = max(1, 8192 // len(images))
        with evaluation_mode(self):
            mean, log_var = self.posterior(images)
            return importance_sampled_log_likelihood(mean, log_var, log_likelihood, k, chunk, generator)

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, _ = batch
        mean, log_var = self.posterior(images)
        latents = reparameterize(mean, log_var)
        out = self.decoder(latents)
        recon = reconstruction_loss(out, images, self.options.recon_loss).mean()
        kl = gaussian_kl(mean, log_var).mean()
        # Warm-up against early posterior collapse; evaluation at the target beta keeps val/loss comparable.
        beta, warmup = self.options.beta, self.options.kl_warmup
        if stage == "train" and warmup > 0:
            beta *= min(1.0, self.iteration / warmup)
        loss = recon + beta * kl
        # What the loss drops of -log p(x|z) per image: (d/2) log(pi) for `mse` of d pixels, 0 for `bce`.
        dropped = 0.0 if self.options.recon_loss == "bce" else images[0].numel() / 2 * math.log(math.pi)
        values = {
            f"{stage}/loss": loss,
            f"{stage}/recon": recon,
            f"{stage}/kl": kl,
            f"{stage}/elbo": -(recon + kl) - dropped,
        }
        if stage == "train":
            # Training's: of the reconstruction it trains on, from a drawn code.
            values["train/mse"] = F.mse_loss(self.as_image(out).detach(), images)
            # The loss in the progress line, as every family shows its own.
            self.log_training({"train/loss": values.pop("train/loss")}, prog_bar=True)
            self.log_training({**values, "train/beta": beta})
            return loss
        if stage == "test" and self.options.nll_samples:
            k = self.options.nll_samples
            # The estimate restores the random state it drew from: asking for it changes no other number.
            device = images.device
            accelerated = device.type != "cpu"
            with torch.random.fork_rng(
                devices=[device] if accelerated else [], device_type=device.type if accelerated else "cuda"
            ):
                values[f"test/nll_is{k}"] = -self.log_likelihood(images, k).mean().float()
        # Validation and test score the posterior mean's reconstruction, the deterministic one tools use.
        reconstruction = self.decode(mean)
        values[f"{stage}/mse"] = F.mse_loss(reconstruction, images)
        self.log_split_means(values, len(images))
        self.log_dict(self.reconstruction_quality.update(stage, reconstruction, images), on_epoch=True)
        return loss

"""Recurrent autoencoder of series [B, T, C], optionally a VAE (`--variational`), trained with scheduled
teacher forcing and evaluated free-running, so `val/mse` measures what generation does. Not variational, it
samples codes from a mixture of full-covariance Gaussians fitted to the training codes (Ghosh et al., "From
Variational to Deterministic Autoencoders", ICLR 2020: ex-post density estimation), kept in the checkpoint."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_genae.errors import ConfigError, TrainingDiverged
from lightning_genae.metrics.generative import seeded_subset
from lightning_genae.models.base import ObjectiveModule, adam, check_data, evaluation_mode, inference
from lightning_genae.models.options import RAEOptions
from lightning_genae.models.variational import GaussianEncoding, gaussian_kl, reparameterize
from lightning_genae.nets.recurrent import RecurrentDecoder, RecurrentEncoder

# Training series encoded to fit the code density: all of timegan_sines' 7,000, whose ten-component mixture
# fitted to 4,096 of them scored 0.023 on TimeGAN's discriminative score, fitted to all 0.010.
MAX_FIT_SERIES = 16384
FIT_BATCH = 512


def training_subset(count: int) -> Tensor:
    """The indices of the `count` training series the code density is fitted to: all up to MAX_FIT_SERIES,
    past it a fixed random subset (a prefix would be one part of a recording or a panel stored in order)."""
    return seeded_subset(count, MAX_FIT_SERIES, seed=0)


# RNNs can take one huge gradient step through a long unroll; this caps every step's norm.
GRADIENT_CLIP = 1.0


def code_gaussian(codes: Tensor, iteration: int) -> tuple[Tensor, Tensor]:
    """(mean, Cholesky factor of the covariance) of codes [N, D], with a ridge at each dimension's own scale;
    TrainingDiverged for codes no Gaussian can take (inf, NaN: the training diverged with finite losses)."""
    mean = codes.mean(0)
    centred = codes - mean
    covariance = centred.T @ centred / max(1, len(codes) - 1)
    variances = covariance.diagonal().nan_to_num(nan=math.inf)
    covariance += torch.diag(1e-6 * variances.clamp_min(1.0))
    factor, failed = torch.linalg.cholesky_ex(covariance)
    if failed.item() or not torch.isfinite(factor).all():
        raise TrainingDiverged(
            f"the codes of the training series are not finite at step {iteration} (largest variance "
            f"{variances.max().item():.3g}); start again with a lower lr"
        )
    return mean, factor


def code_mixture(codes: Tensor, components: int, iteration: int) -> tuple[Tensor, Tensor, Tensor]:
    """(weights [K], means [K, D], Cholesky factors [K, D, D]) of `components` Gaussians fitted to codes by
    seeded EM (scikit-learn), one component being `code_gaussian`; those beyond the codes weigh 0."""
    mean, factor = code_gaussian(codes, iteration)  # also refuses codes no Gaussian can take
    if components == 1:
        return torch.ones(1, dtype=codes.dtype), mean[None], factor[None]
    from sklearn.mixture import GaussianMixture

    fitted = min(components, len(codes))
    mixture = GaussianMixture(fitted, covariance_type="full", random_state=0).fit(codes.cpu().numpy())
    weights = torch.zeros(components, dtype=codes.dtype)
    means = torch.zeros(components, codes.shape[1], dtype=codes.dtype)
    factors = torch.eye(codes.shape[1], dtype=codes.dtype).repeat(components, 1, 1)
    weights[:fitted] = torch.from_numpy(mixture.weights_)
    means[:fitted] = torch.from_numpy(mixture.means_)
    factors[:fitted] = torch.linalg.cholesky(torch.from_numpy(mixture.covariances_))
    return weights, means, factors


class RAEModule(GaussianEncoding, ObjectiveModule):
    """Recurrent autoencoder of series; an `Autoencoder` and a `Sampler` of [B, T, C] series."""

    options_type = RAEOptions
    options: RAEOptions
    data_kind: ClassVar[str] = "sequence"
    shape_key: ClassVar[str] = "series_shape"
    width_option: ClassVar[str] = "rnn_hidden"

    def __init__(self, series_shape: tuple[int, int] | list[int], **options: Any) -> None:
        super().__init__(series_shape, **options)
        seq_len, channels = self.data_shape
        o = self.options
        outputs = (2 if o.variational else 1) * self.latent_dim
        self.encoder = RecurrentEncoder(channels, outputs, o.rnn_hidden, o.rnn_layers, o.rnn)
        self.decoder = RecurrentDecoder(self.latent_dim, channels, seq_len, o.rnn_hidden, o.rnn_layers, o.rnn)
        # The code density of a deterministic RAE: each component's weight, mean and Cholesky factor.
        components = 1 if o.variational else o.code_components
        self.register_buffer("code_weights", torch.ones(components) / components)
        self.register_buffer("code_mean", torch.zeros(components, self.latent_dim))
        self.register_buffer("code_scale", torch.eye(self.latent_dim).repeat(components, 1, 1))
        self._codes_fitted_at: int | None = None
        # Whether a training step changed the weights since the codes' density was fitted (or restored).
        self._trained_since_codes_fitted = False

    def encode(self, series: Tensor) -> Tensor:
        """The code (the posterior mean in the variational form)."""
        return self.posterior(series)[0] if self.options.variational else self.encoder(series)

    def decode(self, latents: Tensor) -> Tensor:
        """Free-running decoding: every step is fed the decoder's own previous output."""
        return self.decoder(latents)

    @inference
    def reconstruct(self, series: Tensor) -> Tensor:
        return self.decode(self.encode(series))

    def sampling(self) -> str:
        if self.options.variational:
            return "samples decode draws from the N(0, I) prior (--variational)"
        components = len(self.code_weights)
        density = "a full-covariance Gaussian" if components == 1 else f"a mixture of {components} Gaussians"
        return (
            f"samples decode draws from {density} fitted to the training codes "
            "(not variational: the codes have no prior of their own)"
        )

    @inference
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        noise = self.prior_noise(n, generator)
        if self.options.variational:
            return self.decode(noise)
        self._fit_code_density()
        if len(self.code_weights) == 1:
            return self.decode(self.code_mean[0] + noise @ self.code_scale[0].T)
        # Drawn on the CPU after the noise, as the noise is: a seeded generator gives the same codes anywhere.
        chosen = torch.multinomial(self.code_weights.cpu().float(), n, replacement=True, generator=generator)
        chosen = chosen.to(self.device)
        return self.decode(self.code_mean[chosen] + (self.code_scale[chosen] @ noise[..., None]).squeeze(-1))

    @torch.no_grad()
    def fit_code_density(self, series: Tensor) -> None:
        """Fit `sample`'s code density (not variational) to training series [N, T, C] in model units."""
        what = "RAEModule.fit_code_density's series"
        check_data(series, self.data_kind, self.data_shape, warn_scale=False, what=what)
        with evaluation_mode(self):
            self._fit_code_density_to(series[training_subset(len(series))])

    @torch.no_grad()
    def _fit_code_density_to(self, series: Tensor) -> None:
        codes = torch.cat(
            [
                self.encode(series[start : start + FIT_BATCH].to(self.device))
                for start in range(0, len(series), FIT_BATCH)
            ]
        ).double()
        weights, means, factors = code_mixture(codes, len(self.code_weights), self.iteration)
        self.code_weights.copy_(weights.to(self.code_weights.dtype))
        self.code_mean.copy_(means.to(self.code_mean.dtype))
        self.code_scale.copy_(factors.to(self.code_scale.dtype))
        self._codes_fitted_at = self.iteration
        self._trained_since_codes_fitted = False

    @torch.no_grad()
    def _fit_code_density(self) -> None:
        """Refit the code density on the training split when the weights changed since the last fit; without
        a lightning-genae DataModule, keep the saved or given one (refused if trained since)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if hasattr(datamodule, "items_at") and hasattr(datamodule, "to_model_range"):
            if self._codes_fitted_at != self.iteration:
                # Read by index: a streamed training split is never held whole.
                series, _ = datamodule.items_at("train", training_subset(datamodule.split_size("train")))
                self._fit_code_density_to(datamodule.to_model_range(series))
            return
        if self._trained_since_codes_fitted:
            raise ConfigError(
                "RAEModule.sample: the code density is stale (trained outside a lightning-genae DataModule); "
                "call model.fit_code_density(series) with the training series in model units"
            )

    def on_fit_start(self) -> None:
        """The decoder's output range is the DataModule's recorded training range (none: linear), read here
        once and then kept in the weights, so a restored checkpoint decodes as the run did."""
        super().on_fit_start()
        normaliser = getattr(self.trainer.datamodule, "normaliser", None)
        if normaliser is not None:
            self.decoder.hold_within(normaliser.model_range())

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        series, _ = batch
        training = stage == "train"
        values: dict[str, Tensor] = {}
        if self.options.variational:
            mean, log_var = self.posterior(series)
            latents = reparameterize(mean, log_var) if training else mean
        else:
            latents = self.encoder(series)
        forcing = self.options.teacher_forcing if training else 0.0
        if training and self.options.tf_decay_steps > 0:
            # The probability falls linearly to 0 over tf_decay_steps (0: kept constant).
            forcing *= max(0.0, 1.0 - self.iteration / self.options.tf_decay_steps)
        self._trained_since_codes_fitted |= training
        out = self.decoder(latents, targets=series if training else None, teacher_forcing=forcing)
        mse = F.mse_loss(out, series)
        if self.options.variational:
            # Gaussian likelihood with variance 1/2 on normalised values (constants dropped), as vae's mse.
            recon = (out - series).pow(2).flatten(1).sum(1).mean()
            kl = gaussian_kl(mean, log_var).mean()
            loss = recon + kl
            values.update({f"{stage}/recon": recon, f"{stage}/kl": kl})
        else:
            loss = mse
        values.update({f"{stage}/loss": loss, f"{stage}/mse": mse.detach()})
        if training:
            # The loss in the progress line, as every family shows its own.
            self.log_training({"train/loss": values.pop("train/loss")}, prog_bar=True)
            self.log_training({**values, "train/teacher_forcing": forcing})
        else:
            self.log_split_means(values, len(series))
        return loss

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: Any = None,
        gradient_clip_algorithm: Any = None,
    ) -> None:
        self.clip_gradients(optimizer, gradient_clip_val=GRADIENT_CLIP, gradient_clip_algorithm="norm")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.parameters(), lr=self.options.lr)

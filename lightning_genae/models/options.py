"""Every model family's options: one frozen dataclass per family, apart from the LightningModules so that
`run.py --help` and a bad option are answered without importing Lightning."""

from __future__ import annotations

import re
import types
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from lightning_genae.errors import ConfigError, refuse_unread
from lightning_genae.nets.recurrent import RNNKind
from lightning_genae.plugin_options import PluginOptions, option, with_default


@dataclass(frozen=True)
class FamilyOptions(PluginOptions):
    """The options every family takes; a family subclasses this with its own, and may change a default."""

    # Settings that hold only together: (option, value) -> the value each other option must then have.
    # Not annotated, so that it is no field: every entry of __dataclass_fields__ is an option.
    requires = types.MappingProxyType({})

    latent_dim: int = option(32, "latent / noise dimension", at_least=1)
    width: int = option(64, "channel width of the first conv layer", at_least=1)
    lr: float = option(1e-3, "learning rate", above=0)

    @classmethod
    def parse(cls, values: Mapping[str, Any], given: Collection[str] = ()) -> FamilyOptions:
        """Options from raw values, checked; an option they leave unread is refused before any value, so no
        one fixes a value only to be told to drop it. What is read is decided by the values that pass their
        own checks (none where a choice fails); a failing check of several together among those comes first
        unless it names a failing option."""
        passing = cls.passing_values(values)
        if passing is not None:
            failing = (set(values) & set(cls.__dataclass_fields__)) - set(passing)
            try:
                reading = cast(FamilyOptions, super().parse(passing))
            except ConfigError as error:
                if not any(
                    re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", str(error)) for name in failing
                ):
                    raise
            else:
                # An option left unread is refused where it is off its default, failing its own check, or
                # named (`given`): at its default, the values cannot tell it from one left unset.
                fields, reasons = cls.__dataclass_fields__, reading.unread()
                off = {name for name in reasons if getattr(reading, name) != fields[name].default}
                refuse_unread([name for name in reasons if name in {*given, *failing, *off}], reasons)
        return cast(FamilyOptions, super().parse(values))

    def __post_init__(self) -> None:
        super().__post_init__()
        for (name, value), needed in self.requires.items():
            wrong = {other: want for other, want in needed.items() if getattr(self, other) != want}
            if getattr(self, name) == value and wrong:
                other, want = next(iter(wrong.items()))
                default = type(self).__dataclass_fields__[other].default
                fix = f"drop {other} {getattr(self, other)}" if want == default else f"add {other} {want}"
                raise ConfigError(f"{name} {value} needs {other} {want}: {fix}")


ReconLoss = Literal["mse", "bce"]


def width_unread(fixed_nets: str) -> str:
    """Why `width` is unread with nets whose size is fixed (the papers' fully connected ones)."""
    return f"sizes the conv nets, which {fixed_nets} leaves out; drop width or {fixed_nets}"


@dataclass(frozen=True)
class ReconstructionOptions(FamilyOptions):
    recon_loss: ReconLoss = option("mse", "reconstruction loss: mse or bce")


@dataclass(frozen=True)
class SingleObjectiveOptions(ReconstructionOptions):
    """The autoencoders trained on one loss with one optimizer, whose learning rate may follow a schedule."""

    lr_schedule: Literal["constant", "cosine"] = option(
        "constant", "learning rate over the run: constant, or cosine (annealed to 0 at --max-steps)"
    )


@dataclass(frozen=True)
class AutoencoderOptions(SingleObjectiveOptions):
    denoise: float = option(0.0, "std of Gaussian input noise; > 0 makes a denoising AE", at_least=0)


# The IWAE paper's one-stochastic-layer nets: two deterministic layers of this many tanh units in each.
VAE_PAPER_HIDDEN = 200


@dataclass(frozen=True)
class VAEOptions(SingleObjectiveOptions):
    # A Bernoulli likelihood makes val/elbo a log-likelihood bound in nats per image.
    recon_loss: ReconLoss = with_default(ReconstructionOptions, "recon_loss", "bce")
    vae_nets: Literal["conv", "paper"] = option(
        "conv",
        "conv: the shared conv encoder and decoder (sized by --width); paper: the IWAE paper's fully "
        f"connected MNIST nets, two hidden layers of {VAE_PAPER_HIDDEN} tanh units each way (docs/models.md)",
    )
    beta: float = option(1.0, "weight of the KL term", at_least=0)
    kl_warmup: int = option(0, "steps over which the KL weight rises from 0 to beta", at_least=0)
    nll_samples: int = option(
        0,
        "test: log test/nll_isK, the negative log-likelihood in nats per image estimated by importance "
        "sampling with K draws (Burda et al. 2016; 5000 in the literature); with --recon-loss bce, on binary "
        "pixels (--data binarized_mnist); 0: off",
        at_least=0,
    )

    def unread(self) -> dict[str, str]:
        unread = super().unread()
        if self.vae_nets == "paper":
            unread["width"] = width_unread("vae_nets paper")
        if self.recon_loss != "bce":
            unread["nll_samples"] = "estimates a Bernoulli likelihood; use it with recon_loss bce, or drop it"
        return unread


GanLoss = Literal["ns", "hinge"]


@dataclass(frozen=True)
class GANOptions(FamilyOptions):
    # The GAN paper's MNIST training is of its own nets and its non-saturating loss.
    requires = {("gan_training", "paper"): {"gan_nets": "paper", "gan_loss": "ns"}}
    # Not DCGAN's 2e-4: better test fd_classifier at the default budget (docs/models.md).
    lr: float = with_default(FamilyOptions, "lr", 5e-4)
    gan_loss: GanLoss = option(
        "ns",
        "ns (non-saturating; Adam betas 0.5, 0.999) or hinge (with the Adam betas 0, 0.9 it is trained "
        "with in SAGAN)",
    )
    ema: float = option(0.0, "decay of an EMA generator used for sampling (0 = off)", at_least=0, below=1)
    spectral_norm: bool = option(
        False, "spectral normalisation in the discriminator, in place of its batch norm (as in SN-GAN)"
    )
    gan_nets: Literal["dcgan", "paper"] = option(
        "dcgan",
        "dcgan: the shared DCGAN-style conv nets (sized by --width); paper: the GAN paper's MNIST nets, an "
        "MLP generator and a maxout discriminator with dropout (docs/models.md)",
    )
    gan_training: Literal["adam", "paper"] = option(
        "adam",
        "adam: alternating D and G updates with Adam at --lr (betas as --gan-loss says); paper: the GAN "
        "paper's MNIST training, one simultaneous SGD update of both nets (needs --gan-nets paper)",
    )

    def unread(self) -> dict[str, str]:
        unread = super().unread()
        if self.gan_training == "paper":
            unread["lr"] = "is ignored by gan_training paper (0.1, decaying); drop lr or gan_training paper"
        if self.gan_nets == "paper":
            unread["width"] = width_unread("gan_nets paper")
            unread["spectral_norm"] = "is for the conv discriminator; drop spectral_norm or gan_nets paper"
        return unread


@dataclass(frozen=True)
class BEGANOptions(FamilyOptions):
    # BEGAN's Adam settings (lr 1e-4, beta1 0.5): better test fd_classifier on digits than 2e-4.
    lr: float = with_default(FamilyOptions, "lr", 1e-4)
    d_loss: Literal["began", "ebgan"] = option(
        "began", "began (equilibrium control k_t) or ebgan (margin, pulling-away term)"
    )
    began_nets: Literal["began", "dcgan"] = option(
        "began",
        "the paper's generator and autoencoder (3x3 convs, ELU, nearest-neighbour upsampling, no batch "
        "norm) with z ~ U(-1, 1); dcgan: the DCGAN-style nets every other family shares, with z ~ N(0, 1)",
    )
    began_skip_connections: bool = option(
        False,
        "with --began-nets began: the paper's optional skip connections (section 3.5.1), the decoders' "
        "base map h0 upsampled and concatenated after every upsampling",
    )
    began_gamma: float = option(
        0.5,
        "with --d-loss began: target ratio of fake to real energy, in (0, 1]; lower means less diverse",
        above=0,
        at_most=1,
    )
    began_lambda_k: float = option(
        1e-3, "with --d-loss began: step size of k_t, which is clipped to [0, 1]", above=0
    )
    # On digits D's energy of reals falls from about 0.6 to 0.1 in 300 iterations and fakes settle near the
    # margin: 0.3 keeps them clearly apart and is reachable.
    ebgan_margin: float = option(
        0.3,
        "with --d-loss ebgan: D pushes fakes' energy (per-pixel mean |x - D(x)|, in [0, 2]) up to it",
        above=0,
    )
    ebgan_pt: float = option(
        0.1,
        "with --d-loss ebgan: weight of the pulling-away term in G's loss (0.1 as in the paper)",
        at_least=0,
    )

    def unread(self) -> dict[str, str]:
        unread = super().unread()
        if self.began_nets != "began":
            unread["began_skip_connections"] = "changes the paper's nets; drop began_nets dcgan"
        # The other loss's options: giving one is an error, not a silent no-op.
        other = "ebgan" if self.d_loss == "began" else "began"
        names = ("ebgan_margin", "ebgan_pt") if other == "ebgan" else ("began_gamma", "began_lambda_k")
        unread.update({name: f"is read only with d_loss {other}, not d_loss {self.d_loss}" for name in names})
        return unread


@dataclass(frozen=True)
class VAEGANOptions(FamilyOptions):
    lr: float = with_default(FamilyOptions, "lr", 3e-4)
    beta: float = option(1.0, "weight of the KL term", at_least=0)
    vaegan_gamma: float = option(
        1e-2,
        "weight of the feature reconstruction loss against the GAN loss in the decoder's update "
        "(the paper's gamma in its role; the loss is the full squared error, twice the paper's, so 0.01 "
        "here is the paper's 0.02)",
        above=0,
    )


# The paper's fully connected nets: two hidden layers of this many ReLU units in each of the three.
AAE_PAPER_HIDDEN = 1000


@dataclass(frozen=True)
class AAEOptions(ReconstructionOptions):
    # The AAE paper's MNIST training is of its own nets and its squared Euclidean error.
    requires = {("aae_training", "paper"): {"aae_nets": "paper", "recon_loss": "mse"}}
    # Matching a deterministic code to the prior gets harder with every dimension (on digits: best at 4-8).
    latent_dim: int = with_default(FamilyOptions, "latent_dim", 8)
    aae_prior: Literal["gaussian", "mixture"] = option(
        "gaussian", "prior the codes are pushed to: gaussian N(0, S^2 I), S = --aae-prior-std, or mixture"
    )
    aae_nets: Literal["conv", "paper"] = option(
        "conv",
        "conv: the shared conv encoder and decoder (sized by --width), a latent discriminator of 8 x --width "
        f"units; paper: the paper's fully connected MNIST nets, two layers of {AAE_PAPER_HIDDEN} units each",
    )
    aae_components: int = option(
        10,
        "components of --aae-prior mixture (of standard deviation --aae-prior-std, on the signed axes)",
        at_least=2,
    )
    aae_supervised: bool = option(
        False, "with --aae-prior mixture: class c's codes go to component c (D is told the label)"
    )
    # Chosen on MNIST's Parzen log-likelihood (docs/models.md): 10/784, 10 against a loss summed on 784 pixels
    aae_adversarial_weight: float = option(
        0.0128,
        "weight of the encoder's adversarial loss against the per-pixel reconstruction loss in the "
        "optimizer both share; a resumed run may raise it",
        above=0,
        changeable_on_resume=True,
    )
    aae_training: Literal["adam", "paper"] = option(
        "adam",
        "adam: the three updates with Adam at --lr; paper: the AAE paper's MNIST training, each phase its "
        "own SGD with momentum (needs --aae-nets paper; docs/models.md)",
    )
    # Bounded so that the prior's covariance (std^2) stays invertible and finite in float32.
    aae_prior_std: float = option(
        1.0,
        "standard deviation of the prior (of a mixture: its means and spread scaled together); the paper's "
        "MNIST prior: 5",
        at_least=1e-3,
        at_most=1e3,
    )

    def unread(self) -> dict[str, str]:
        unread = super().unread()
        if self.aae_nets == "paper":
            unread["width"] = width_unread("aae_nets paper")
        if self.aae_training == "paper":
            unread["lr"] = "is ignored by aae_training paper (its own rates); drop lr or aae_training paper"
            unread["aae_adversarial_weight"] = (
                "is ignored by aae_training paper; drop aae_adversarial_weight or aae_training paper"
            )
        if self.aae_prior != "mixture":
            for name in ("aae_components", "aae_supervised"):
                unread[name] = "shapes the mixture prior; add aae_prior mixture or drop it"
        return unread

    def __post_init__(self) -> None:
        super().__post_init__()
        components, latent_dim = self.aae_components, self.latent_dim
        if self.aae_prior == "mixture" and components > 2 * latent_dim:
            # The mixture's means lie on the signed axes of the code: at most two components per dimension.
            raise ConfigError(
                f"aae_components {components} needs latent_dim of at least {(components + 1) // 2}; "
                "raise latent_dim or lower aae_components"
            )


@dataclass(frozen=True)
class RAEOptions(FamilyOptions):
    latent_dim: int = with_default(FamilyOptions, "latent_dim", 16)
    # Measured on sines: a lower validation MSE than 1e-3.
    lr: float = with_default(FamilyOptions, "lr", 3e-3)
    rnn: RNNKind = option("gru", "recurrent cell, lstm or gru")
    rnn_layers: int = option(1, "stacked recurrent layers in the encoder and the decoder", at_least=1)
    rnn_hidden: int = option(64, "hidden units per recurrent layer", at_least=1)
    teacher_forcing: float = option(
        1.0,
        "probability of feeding the decoder the true previous value at the start",
        at_least=0,
        at_most=1,
    )
    tf_decay_steps: int = option(
        1000, "iterations over which that probability falls linearly to 0 (0: kept constant)", at_least=0
    )
    variational: bool = option(False, "VAE form (Gaussian posterior, KL to N(0, I), prior samples)")
    # Ten, as Ghosh et al. (2020) fit to a deterministic autoencoder's codes. On timegan_sines one Gaussian
    # left the samples of three trained models 0.046 on TimeGAN's discriminative score, ten 0.018: the level
    # of the decoded training codes themselves, 0.019 (docs/results-rae.md).
    code_components: int = option(
        10,
        "Gaussians in the mixture fitted to the training codes that samples decode (1: one Gaussian)",
        at_least=1,
    )

    def unread(self) -> dict[str, str]:
        unread = {
            **super().unread(),
            "width": "sizes conv layers, which rae has none of; drop it (rnn_hidden sizes its layers)",
        }
        if self.variational:
            unread["code_components"] = "sizes the density fitted to a deterministic rae's codes; drop it"
        return unread

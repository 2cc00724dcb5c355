"""Every model family's options: one frozen dataclass per family, importable without Lightning.

The command line, config files, `--help` defaults and the checks all come from these classes, so
`run.py --help` and a bad option are answered without importing the LightningModules (models/*.py), which
import Lightning. A family's module names its options class (`options_type`); the registry in
`models/__init__.py` names both.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lightning_genae.errors import ConfigError
from lightning_genae.nets.recurrent import RNNKind
from lightning_genae.plugin_options import PluginOptions, option, unread_refusal, with_default


@dataclass(frozen=True)
class FamilyOptions(PluginOptions):
    """The options every family takes. A family subclasses this with its own, and may change a default.

    Values are plain (numbers, strings, booleans), so a checkpoint's hyper-parameters rebuild the module.
    """

    latent_dim: int = option(32, "latent / noise dimension", at_least=1)
    width: int = option(64, "channel width of the first conv layer", at_least=1)
    lr: float = option(1e-3, "learning rate", above=0)

    @classmethod
    def parse(cls, values: Mapping[str, Any], given: Collection[str] = ()) -> FamilyOptions:
        """Options from raw values, checked: an option the values leave unread is refused first, then each
        value's own check and the family's checks of several together."""
        cls._refuse_unread_first(values, given)
        options = super().parse(values)
        assert isinstance(options, FamilyOptions)
        return options

    @classmethod
    def _refuse_unread_first(cls, values: Mapping[str, Any], given: Collection[str]) -> None:
        """Refuse an unread option before any value is checked, so that no one is sent to fix a value only
        to be told to drop it. What is read is decided by the values that pass their own checks; one that
        fails is left at its default here and counts as given. Nothing is refused here where a choice fails
        (a mistyped `d_loss: ebgn` decides what is read, and its default would blame another option). Where
        the passing values fail a check of several together, that check is reported first if its message
        names none of the failing options: it stands whatever they are fixed to (`gan_training paper,
        width 0` is told to add gan_nets paper, which then leaves width unread, not to fix width first).
        One that names a failing option may hold only for its default, and the full parse reports
        the failing value instead. Where every value passes, these are the options the full parse returns."""
        passing = cls.passing_values(values)
        if passing is None:
            return
        failing = (set(values) & set(cls.__dataclass_fields__)) - set(passing)
        try:
            reading = super().parse(passing)
        except ConfigError as error:
            if not any(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", str(error)) for name in failing):
                raise
            return
        assert isinstance(reading, FamilyOptions)
        reading.refuse_unread({*given, *(set(values) - set(passing))})

    def refuse_unread(self, given: Collection[str] = ()) -> None:
        """Refuse an option these values leave unread (`unread()`): one set to a value other than its
        default, or one in `given` (named on the command line) even at its default, which the values alone
        cannot tell from an option left unset (a config.yaml holds every option's value, so a re-run from one
        names none)."""
        fields = type(self).__dataclass_fields__
        reasons = self.unread()
        refused = [name for name in reasons if name in given or getattr(self, name) != fields[name].default]
        if refused:
            raise unread_refusal(refused, reasons)


# ----- the autoencoders -----

ReconLoss = Literal["mse", "bce"]


@dataclass(frozen=True)
class ReconstructionOptions(FamilyOptions):
    recon_loss: ReconLoss = option("mse", "reconstruction loss: mse or bce")


LRSchedule = Literal["constant", "cosine"]


@dataclass(frozen=True)
class SingleObjectiveOptions(ReconstructionOptions):
    """The autoencoders trained on one loss with one optimizer, whose learning rate may follow a schedule."""

    lr_schedule: LRSchedule = option(
        "constant", "learning rate over the run: constant, or cosine (annealed to 0 at --max-steps)"
    )


@dataclass(frozen=True)
class AutoencoderOptions(SingleObjectiveOptions):
    denoise: float = option(0.0, "std of Gaussian input noise; > 0 makes a denoising AE", at_least=0)


@dataclass(frozen=True)
class VAEOptions(SingleObjectiveOptions):
    # A Bernoulli likelihood makes val/elbo a log-likelihood bound in nats per image.
    recon_loss: ReconLoss = with_default(ReconstructionOptions, "recon_loss", "bce")
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
        if self.recon_loss != "bce":
            unread["nll_samples"] = "estimates a Bernoulli likelihood; use it with recon_loss bce, or drop it"
        return unread


# ----- the GANs -----

GanLoss = Literal["ns", "hinge"]
GanTraining = Literal["adam", "paper"]


def width_unread(fixed_nets: str) -> str:
    """Why `width` is unread with nets whose size is fixed (the papers' fully connected ones)."""
    return f"sizes the conv nets, which {fixed_nets} leaves out; drop width or {fixed_nets}"


@dataclass(frozen=True)
class GANOptions(FamilyOptions):
    # Not the DCGAN paper's 2e-4: at the default budget (digits, 2,000 iterations, seeds 0-2) 5e-4 gave test
    # fd_classifier 11.54 +- 0.84 against 13.09 +- 0.44 (docs/models.md).
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
    gan_nets: GanNets = option(
        "dcgan",
        "dcgan: the shared DCGAN-style conv nets (sized by --width); paper: the GAN paper's MNIST nets, a "
        "generator of two 1200-unit ReLU layers and a discriminator of two maxout layers (240 units, 5 "
        "pieces) with dropout",
    )

    gan_training: GanTraining = option(
        "adam",
        "adam: alternating D and G updates with Adam at --lr (betas as --gan-loss says); paper: the GAN "
        "paper's MNIST training (goodfeli/adversarial mnist.yaml; needs --gan-nets paper): one pass of fakes "
        "gives D's "
        "and G's gradients, both stepped at once by SGD with momentum, learning rate 0.1 divided by "
        "1.000004 per iteration (at least 1e-6), momentum 0.5 rising linearly to 0.7 at epoch 250",
    )

    def unread(self) -> dict[str, str]:
        unread = super().unread()
        if self.gan_training == "paper":
            unread["lr"] = (
                "would be ignored: gan_training paper sets its own learning rate (0.1, decaying); drop lr "
                "or gan_training paper"
            )
        if self.gan_nets == "paper":
            unread["width"] = width_unread("gan_nets paper")
            unread["spectral_norm"] = (
                "normalises the conv discriminator; the paper's nets regularise theirs with dropout: drop "
                "spectral_norm or gan_nets paper"
            )
        return unread

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gan_training == "paper":
            if self.gan_nets != "paper":
                raise ConfigError(
                    "gan_training paper is the schedule of the GAN paper's MNIST nets: add gan_nets paper"
                )
            if self.gan_loss != "ns":
                raise ConfigError(
                    "gan_training paper trains the paper's non-saturating loss: drop gan_loss hinge"
                )


DLoss = Literal["began", "ebgan"]
BEGANNets = Literal["began", "dcgan"]

# The options each loss reads; giving one the chosen loss would ignore is an error, not a silent no-op.
LOSS_OPTIONS: dict[str, tuple[str, ...]] = {
    "began": ("began_gamma", "began_lambda_k"),
    "ebgan": ("ebgan_margin", "ebgan_pt"),
}


@dataclass(frozen=True)
class BEGANOptions(FamilyOptions):
    # BEGAN's Adam settings (lr 1e-4, beta1 0.5). Measured on digits, 1,500 iterations, seed 0: test
    # fd_classifier 94.0 / 25.2 / 33.4 at 1e-4 against 119.1 / 33.1 / 40.6 at 2e-4 (began defaults / ebgan /
    # gamma 0.95 lambda_k 0.1).
    lr: float = with_default(FamilyOptions, "lr", 1e-4)
    d_loss: DLoss = option("began", "began (equilibrium control k_t) or ebgan (margin, pulling-away term)")
    began_nets: BEGANNets = option(
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
    ebgan_margin: float = option(
        0.3,
        "with --d-loss ebgan: D pushes fakes' energy up to this margin; energies are per-pixel mean "
        "|x - D(x)| in [0, 2]; on digits D's energy of reals falls from about 0.6 to 0.1 in 300 iterations "
        "and fakes settle near the margin, so 0.3 keeps them clearly apart and is reachable",
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
        for loss, names in LOSS_OPTIONS.items():
            if loss != self.d_loss:
                unread.update(
                    {name: f"is read only with d_loss {loss}, not d_loss {self.d_loss}" for name in names}
                )
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


# ----- the adversarial autoencoder -----

GanNets = Literal["dcgan", "paper"]
AaePrior = Literal["gaussian", "mixture"]
AaeNets = Literal["conv", "paper"]
AaeTraining = Literal["adam", "paper"]
# The paper's fully connected nets: two hidden layers of this many ReLU units in each of the three.
AAE_PAPER_HIDDEN = 1000

DEFAULT_COMPONENTS = 10


@dataclass(frozen=True)
class AAEOptions(ReconstructionOptions):
    # Matching a deterministic code to the prior gets harder with every dimension: on digits after 500
    # iterations (seed 0) the test fd_classifier was 21.8, 20.7, 110 and (val) 55 with 4, 8, 16, 32.
    latent_dim: int = with_default(FamilyOptions, "latent_dim", 8)
    aae_prior: AaePrior = option(
        "gaussian", "prior the codes are pushed to: gaussian N(0, S^2 I), S = --aae-prior-std, or mixture"
    )
    aae_nets: AaeNets = option(
        "conv",
        "conv: the shared conv encoder and decoder (sized by --width) and a latent discriminator of 8 x "
        f"--width leaky-ReLU units; paper: the paper's MNIST nets, fully connected, each of the three with "
        f"two hidden layers of {AAE_PAPER_HIDDEN} ReLU units",
    )
    aae_components: int = option(
        DEFAULT_COMPONENTS,
        "components of --aae-prior mixture (of standard deviation --aae-prior-std, on the signed axes)",
        at_least=2,
    )
    aae_supervised: bool = option(
        False, "with --aae-prior mixture: class c's codes go to component c (D is told the label)"
    )
    # Chosen on MNIST's Parzen log-likelihood (seed 0, 2,000 iterations, docs/models.md): 250.4, 261.4 and
    # 245.8 nats at 0.003, 0.0128 and 1. 0.0128 is 10/784: against the reconstruction loss summed over an
    # MNIST image's 784 pixels, the adversarial loss weighs 10.
    aae_adversarial_weight: float = option(
        0.0128,
        "weight of the encoder's adversarial loss against the per-pixel reconstruction loss in the "
        "optimizer both share; a resumed run may raise it",
        above=0,
        changeable_on_resume=True,
    )
    aae_training: AaeTraining = option(
        "adam",
        "adam: the three updates with Adam at --lr, the encoder's adversarial loss at "
        "--aae-adversarial-weight in the optimizer it shares with the reconstruction; paper: the AAE paper's "
        "MNIST training (needs --aae-nets paper): weights N(0, 0.01^2), a sigmoid output, the squared "
        "Euclidean error of [0, 1] pixels, and each phase its own SGD with momentum: the reconstruction at "
        "learning rate 0.01, momentum 0.9, the regularisation (the discriminator, then the encoder) at 0.1, "
        "momentum 0.1, every rate a tenth after 50 epochs",
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
            unread["lr"] = (
                "would be ignored: aae_training paper sets each phase's own learning rate; drop lr or "
                "aae_training paper"
            )
            unread["aae_adversarial_weight"] = (
                "would be ignored: under aae_training paper the regularisation phase has its own optimizer "
                "and learning rate; drop aae_adversarial_weight or aae_training paper"
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
                f"aae_components {components} needs latent_dim of at least {(components + 1) // 2} "
                f"(the means lie on the {2 * latent_dim} signed axes of a {latent_dim}-d code); "
                "raise latent_dim or lower aae_components"
            )
        if self.aae_training == "paper":
            if self.aae_nets != "paper":
                raise ConfigError(
                    "aae_training paper is the training of the AAE paper's MNIST nets: add aae_nets paper"
                )
            if self.recon_loss != "mse":
                raise ConfigError(
                    "aae_training paper trains the paper's squared Euclidean error: drop recon_loss "
                    f"{self.recon_loss}"
                )


# ----- the recurrent autoencoder of series -----


@dataclass(frozen=True)
class RAEOptions(FamilyOptions):
    latent_dim: int = with_default(FamilyOptions, "latent_dim", 16)
    # Measured on sines (300 iterations, free-running): validation MSE 0.57 at 3e-3 against 0.78 at 1e-3.
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

    def unread(self) -> dict[str, str]:
        # The shared option sizes conv layers; a recurrent model has none, and must not ignore it.
        return {
            **super().unread(),
            "width": "sizes conv layers, which rae has none of; drop it (rnn_hidden sizes its layers)",
        }

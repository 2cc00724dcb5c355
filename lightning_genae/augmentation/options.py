"""Options of the augmenter-autoencoder augmentations, apart from latent.py so `--help` skips Lightning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lightning_genae.augmentation.adaptive import ControllerOptions
from lightning_genae.errors import ConfigError
from lightning_genae.plugin_options import AUTO, PluginOptions, option


@dataclass(frozen=True)
class AugmenterOptions(PluginOptions):
    """The augmenter autoencoder: how it perturbs a code, and how it is trained (or which one is loaded)."""

    augment_noise: float = option(
        0.5,
        "latent noise std, in units of each latent dimension's std over the training codes",
        at_least=0,
        tunable=True,
    )
    augment_interp: float = option(
        0.5,
        "fraction of augmented images interpolated towards another image (same class when labelled) "
        "in latent space",
        at_least=0,
        at_most=1,
        tunable=True,
    )
    augment_ckpt: str | None = option(
        None,
        "augmenter checkpoint (the .ckpt of a run of the augmenter's family) instead of training and "
        "caching one",
        path=True,
    )
    augmenter_steps: int = option(
        1000, "training iterations of the augmenter autoencoder when it is trained", at_least=1
    )
    augmenter_width: int = option(
        64, "channel width of the augmenter autoencoder (hidden units of an rae)", at_least=1
    )
    augmenter_latent_dim: int = option(32, "latent dimension of the augmenter autoencoder", at_least=1)

    def unread(self) -> dict[str, str]:
        if self.augment_ckpt is None:
            return super().unread()
        loaded = "trains the augmenter, and augment_ckpt loads a trained one instead; drop it"
        return {
            **super().unread(),
            **dict.fromkeys(("augmenter_steps", "augmenter_width", "augmenter_latent_dim"), loaded),
        }


@dataclass(frozen=True)
class StrengthOptions(PluginOptions):
    """A probability p, fixed or steered by ADA's controller (`auto`), whose options (a subclass that
    declares them beside this one) it reads only then."""

    augment_p: float | Literal["auto"] = option(
        0.25,
        "data-side, online: fraction of each training batch replaced by augmented images; "
        "ae-d: probability per discriminator input; auto: ADA's controller sets it (from 0, see --ada-*)",
        at_least=0,
        at_most=1,
        tunable=True,
    )

    def unread(self) -> dict[str, str]:
        if self.augment_p == AUTO:
            return super().unread()
        steers = "steers p, which is fixed here; drop it, or give augment_p auto or augment ada"
        return {**super().unread(), **dict.fromkeys(ControllerOptions.types(), steers)}


@dataclass(frozen=True)
class AugmenterOnInputsOptions(StrengthOptions, AugmenterOptions, ControllerOptions):
    """`ae-d`: the frozen augmenter on each discriminator input with probability --augment-p."""


@dataclass(frozen=True)
class DataSideOptions(StrengthOptions, AugmenterOptions, ControllerOptions):
    """The data-side augmentations: augmented images mixed into the batches online, or an offline pool."""

    augment_mode: Literal["online", "offline"] = option(
        "online",
        "data-side: online (replace part of each batch on the device) or offline (a pre-generated "
        "pool concatenated with the real data)",
    )
    augment_pool: int | None = option(
        None,
        "offline mode: number of augmented images in the pool",
        at_least=1,
        shown_default="the training split's size",
    )
    augment_anneal: bool = option(False, "take --augment-p linearly to zero over training")

    def __post_init__(self) -> None:
        super().__post_init__()
        fixed = "augment_mode offline" if self.augment_mode == "offline" else "augment_anneal"
        if self.augment_p == AUTO and (self.augment_mode == "offline" or self.augment_anneal):
            raise ConfigError(f"augment_p auto steers p, and {fixed} takes a fixed one; drop one of them")

    def unread(self) -> dict[str, str]:
        if self.augment_mode == "online":
            return {
                **super().unread(),
                "augment_pool": "sizes the offline pool; add augment_mode offline or drop it",
            }
        online_only = "sets the online mixing; drop it or augment_mode offline"
        steers = "steers augment_p auto, which a fixed offline pool does not take; drop it"
        return {
            **super().unread(),  # an augmenter's own options, unread when --augment-ckpt gives it
            **dict.fromkeys(("augment_p", "augment_anneal"), online_only),
            **dict.fromkeys(ControllerOptions.types(), steers),
        }

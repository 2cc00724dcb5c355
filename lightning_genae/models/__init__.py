"""Model families: a new one is its options dataclass in `options.py`, its LightningModule in one file here,
and one entry in MODELS, which imports each module on first use (so `--help` never imports Lightning)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightning_genae.errors import ConfigError
from lightning_genae.lazy import lazy_dir, lazy_getattr
from lightning_genae.models.options import (
    AAEOptions,
    AutoencoderOptions,
    BEGANOptions,
    FamilyOptions,
    GANOptions,
    RAEOptions,
    VAEGANOptions,
    VAEOptions,
)
from lightning_genae.plugin_options import Registry, import_location

if TYPE_CHECKING:
    # The names served lazily below, for type checkers, which do not run __getattr__.
    from lightning_genae.models.aae import AAEModule  # noqa: F401
    from lightning_genae.models.ae import AutoencoderModule  # noqa: F401
    from lightning_genae.models.base import GenerativeModule  # noqa: F401
    from lightning_genae.models.began import BEGANModule  # noqa: F401
    from lightning_genae.models.gan import GANModule  # noqa: F401
    from lightning_genae.models.protocols import (  # noqa: F401
        Autoencoder,
        DiscriminatorAugmentation,
        DiscriminatorScores,
        ImageDiscriminator,
        ReconstructingDiscriminator,
        Sampler,
        ScoringDiscriminator,
    )
    from lightning_genae.models.rae import RAEModule  # noqa: F401
    from lightning_genae.models.vae import VAEModule  # noqa: F401
    from lightning_genae.models.vaegan import VAEGANModule  # noqa: F401


@dataclass(frozen=True)
class ModelSpec:
    """A registered family: its LightningModule (`package.module:Class`) and what `resolve` checks of it."""

    location: str
    options: type[FamilyOptions]
    description: str
    data_kind: str = "image"
    image_discriminator: bool = False
    real_logits: bool = False
    generates: bool = True

    @property
    def module(self) -> type[GenerativeModule]:
        """The family's LightningModule class, imported now (which imports Lightning)."""
        from lightning_genae.models.base import GenerativeModule

        # A built-in's location is relative to this package (".ae"), a plug-in's absolute.
        module = import_location(self.location, "lightning_genae.models", GenerativeModule, "a family")
        samples = callable(getattr(module, "sample", None))
        # What resolve decides from the registration (the generative metrics) must be what the module is.
        if samples != self.generates:
            raise ConfigError(
                f"{module.__name__} {'has a' if samples else 'has no'} sample method; register it at "
                f"{self.location!r} with ModelSpec(..., generates={samples})"
            )
        return module


MODELS: Registry[ModelSpec] = Registry(
    "model",
    {
        "ae": ModelSpec(
            ".ae:AutoencoderModule",
            AutoencoderOptions,
            "conv autoencoder (MSE/BCE); --denoise SIGMA makes it denoising",
            generates=False,
        ),
        "vae": ModelSpec(
            ".vae:VAEModule",
            VAEOptions,
            "variational autoencoder with beta and KL warm-up; samples from the prior",
        ),
        "gan": ModelSpec(
            ".gan:GANModule",
            GANOptions,
            "DCGAN, non-saturating or hinge loss, optional generator EMA",
            image_discriminator=True,
            real_logits=True,
        ),
        "began": ModelSpec(
            ".began:BEGANModule",
            BEGANOptions,
            "BEGAN (or --d-loss ebgan: EBGAN): the discriminator is an autoencoder",
            image_discriminator=True,
        ),
        "vaegan": ModelSpec(
            ".vaegan:VAEGANModule",
            VAEGANOptions,
            "VAE-GAN: a VAE whose decoder is the generator, reconstructing in D's features",
            image_discriminator=True,
            real_logits=True,
        ),
        "aae": ModelSpec(
            ".aae:AAEModule",
            AAEOptions,
            "adversarial autoencoder: a latent discriminator matches the codes to a prior",
        ),
        "rae": ModelSpec(
            ".rae:RAEModule",
            RAEOptions,
            "recurrent (LSTM/GRU) autoencoder of series; --variational for the VAE form",
            data_kind="sequence",
        ),
    },
)


def changeable_on_resume(model: str) -> tuple[str, ...]:
    """The options of family `model` that a resumed run may change; none for a name not registered."""
    spec = MODELS.get(model)
    return spec.options.changeable_on_resume() if spec is not None else ()


def unread_by_run(model: str, values: Mapping[str, Any]) -> frozenset[str]:
    """The options a run of family `model` with these stored values leaves unread (`--lr` under a paper's
    training), on which runs are not compared; none where the family is unknown or its values do not parse."""
    spec = MODELS.get(model)
    if spec is None:
        return frozenset()
    fields = spec.options.__dataclass_fields__
    given = {name: value for name, value in values.items() if name in fields and value is not None}
    try:
        options = spec.options.parse(given)
    except ConfigError:
        return frozenset()
    return frozenset(options.unread())


# Each imported from its module on first use (PEP 562), so that importing MODELS does not import Lightning.
_LAZY_EXPORTS = {
    **{spec.location.partition(":")[2]: spec.location.partition(":")[0][1:] for spec in MODELS.values()},
    **dict.fromkeys(
        (
            "Autoencoder",
            "DiscriminatorAugmentation",
            "DiscriminatorScores",
            "ImageDiscriminator",
            "ReconstructingDiscriminator",
            "Sampler",
            "ScoringDiscriminator",
        ),
        "protocols",
    ),
    "GenerativeModule": "base",
}


# Hidden from type checkers, which would take any name the module lacks for a lazy one.
if not TYPE_CHECKING:
    __getattr__ = lazy_getattr(__name__, _LAZY_EXPORTS)
__dir__ = lazy_dir(globals(), _LAZY_EXPORTS)


__all__ = ["MODELS", "FamilyOptions", "ModelSpec", "changeable_on_resume", *_LAZY_EXPORTS]

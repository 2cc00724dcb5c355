"""The contracts tools rely on instead of a model's class (`Autoencoder`, `Sampler`, `ImageDiscriminator`,
`ReconstructingDiscriminator`, `ScoringDiscriminator`), so a new family gets grids and metrics for free."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Autoencoder(Protocol):
    """A model with a latent space reachable from images."""

    latent_dim: int

    def encode(self, images: Tensor) -> Tensor: ...

    def decode(self, latents: Tensor) -> Tensor: ...

    def reconstruct(self, images: Tensor) -> Tensor:
        """decode(encode(images)) in eval mode without gradients (`inference`)."""
        ...


@runtime_checkable
class Sampler(Protocol):
    """A model that generates new images from its prior."""

    latent_dim: int

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n new items from the prior (images in [-1, 1]), in eval mode without gradients (`inference`)."""
        ...


# A differentiable transform of a batch of images in [-1, 1] (DiffAugment, the frozen augmenter, ...).
DiscriminatorAugmentation = Callable[[Tensor], Tensor]


@runtime_checkable
class ImageDiscriminator(Protocol):
    """A family that trains a discriminator of images, built with `discriminator_augmentation=augment`: every
    image its discriminator sees goes through `discriminator_input`, so the augmentation cannot leak."""

    def discriminator_input(self, images: Tensor) -> Tensor: ...


class StrengthController(Protocol):
    """ADA's controller as a model feeds it the real logits of each D step (augmentation/adaptive.py)."""

    p: Tensor
    rt: Tensor

    def observe(self, real_logits: Tensor) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class ReconstructingDiscriminator(Protocol):
    """A family whose discriminator is an autoencoder (BEGAN, EBGAN): `discriminator_reconstructions` gives
    named image batches of one size in the order a picture shows them."""

    def discriminator_reconstructions(
        self, real: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]: ...


# What a discriminator's score of an image is: a logit, higher and positive for judged real (ADA's r_t reads
# its sign), or an energy (BEGAN, EBGAN), D's reconstruction error, lower for judged real.
DiscriminatorScoreKind = Literal["logit", "energy"]


class DiscriminatorScores(NamedTuple):
    """D's raw score of each image [B] (float) and what kind of score it is."""

    values: Tensor
    kind: DiscriminatorScoreKind


@runtime_checkable
class ScoringDiscriminator(Protocol):
    """A family whose discriminator scores single images, exactly as given and never augmented, so that
    scores of training and held-out images taken the same way compare (the overfitting signal)."""

    def discriminator_scores(self, images: Tensor) -> DiscriminatorScores: ...

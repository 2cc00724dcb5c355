"""What the discriminator sees, on every input real and fake alike (augmenting only the reals would leak into
the samples): plain objects, not nn.Modules, so the frozen augmenter stays out of checkpoints and DDP."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from lightning_genae.augmentation.adaptive import AdaptiveStrength
from lightning_genae.augmentation.diffaug import CUTOUT_RATIO, TRANSLATION_RATIO, diff_augment, parse_policy


class AugmenterOnInputs:
    """`ae-d`: each input goes through the frozen augmenter's encode-perturb-decode with probability p, a
    number or the run's ADA controller, whose host copy of p (one update behind) costs no device wait."""

    def __init__(self, augmenter: Callable[[Tensor], Tensor], p: float | AdaptiveStrength) -> None:
        self.augmenter = augmenter
        self.strength = p if isinstance(p, AdaptiveStrength) else None
        self.fixed_p = 0.0 if isinstance(p, AdaptiveStrength) else p

    @property
    def p(self) -> float:
        return self.strength.p_host if self.strength is not None else self.fixed_p

    def __call__(self, images: Tensor) -> Tensor:
        p = self.p
        if p <= 0:
            return images
        chosen = torch.rand(len(images), device=images.device) < p
        # The one read of the device per call: which inputs were chosen (a mask's indexing reads it too).
        index = chosen.nonzero().squeeze(1)
        if len(index) == 0:
            return images
        if isinstance(self.augmenter, torch.nn.Module):
            self.augmenter.to(images.device)
        # Imported here: the latent augmenter reads the registry, which names this module's classes.
        from lightning_genae.augmentation.latent import LatentAugmenter

        if isinstance(self.augmenter, LatentAugmenter) and len(images) > 1:
            # Each chosen input moves towards another input of the whole batch, chosen or not: partners drawn
            # among the chosen alone would often be the input itself at a small p or batch.
            other = torch.randint(1, len(images), (len(index),), device=images.device)
            augmented = self.augmenter(images[index], partners_from=images[(index + other) % len(images)])
        else:
            augmented = self.augmenter(images[index])
        # index_put keeps the graph: gradients reach the chosen inputs through the augmenter.
        return images.index_put((index,), augmented.to(images.dtype))

    def __repr__(self) -> str:
        return f"ae-d p={'auto' if self.strength is not None else self.fixed_p}"


class DiffAugment:
    """DiffAugment of a policy such as `color,translation,cutout`, its ratios fractions of the image size."""

    def __init__(
        self,
        policy: str = "color,translation,cutout",
        *,
        translation: float = TRANSLATION_RATIO,
        cutout: float = CUTOUT_RATIO,
    ) -> None:
        self.policy = parse_policy(policy)
        self.translation = translation
        self.cutout = cutout

    def __call__(self, images: Tensor) -> Tensor:
        return diff_augment(images, self.policy, translation=self.translation, cutout=self.cutout)

    def __repr__(self) -> str:
        # The ratios of the operations in the policy only: the others are never read.
        ratios = [
            f"{name} {getattr(self, name)}" for name in ("translation", "cutout") if name in self.policy
        ]
        return f"diffaug {','.join(self.policy)}" + (f" ({', '.join(ratios)})" if ratios else "")


class Composed:
    """Several discriminator-side augmentations, applied in the order given; `labels`, where given, name
    each in `description` (a plug-in's function has no description of its own, only an address)."""

    def __init__(
        self, transforms: Sequence[Callable[[Tensor], Tensor]], labels: Sequence[str] | None = None
    ) -> None:
        self.transforms = tuple(transforms)
        self.labels = tuple(labels) if labels is not None else tuple(map(repr, self.transforms))

    def __call__(self, images: Tensor) -> Tensor:
        for transform in self.transforms:
            images = transform(images)
        return images

    def description(self) -> str:
        """What the discriminator's inputs go through, in order (`diffaug color,translation (...); ...`)."""
        return "; ".join(self.labels) or "identity"

    def __repr__(self) -> str:
        return f"DiscriminatorAugmentation({self.description()})"

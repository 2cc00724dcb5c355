"""What the discriminator sees: DiffAugment and/or the frozen augmenter, on real and fake inputs alike.

Both are applied to every discriminator input in both the D and the G step and are differentiable, so
the generator's gradient passes through them. Augmenting only the reals would teach the generator to
produce the augmentations (the "leak" DiffAugment and ADA avoid). This is a plain object, not an
nn.Module child of the GAN: the frozen augmenter must stay out of the GAN's checkpoint and out of DDP's
parameter bookkeeping.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_genae.augmentation.diffaug import diff_augment, parse_policy
from lightning_genae.augmentation.latent import LatentAugmenter


class DiscriminatorAugmentation:
    """`ae-d` (the augmenter on each input with probability p), then DiffAugment; either may be absent."""

    def __init__(
        self, augmenter: LatentAugmenter | None = None, p: float = 0.0, diffaug_policy: str | None = None
    ) -> None:
        self.augmenter = augmenter
        self.p = p
        self.policy = parse_policy(diffaug_policy) if diffaug_policy else ()

    def __call__(self, images: Tensor) -> Tensor:
        if self.augmenter is not None and self.p > 0:
            chosen = torch.rand(len(images), device=images.device) < self.p
            if bool(chosen.any()):
                self.augmenter.to(images.device)
                # index_put keeps the graph: gradients reach the chosen inputs through the augmenter.
                augmented = self.augmenter(images[chosen]).to(images.dtype)
                images = images.index_put((chosen,), augmented)
        if self.policy:
            images = diff_augment(images, self.policy)
        return images

    def __repr__(self) -> str:
        parts = []
        if self.augmenter is not None:
            parts.append(f"ae-d p={self.p}")
        if self.policy:
            parts.append(f"diffaug {','.join(self.policy)}")
        return f"DiscriminatorAugmentation({'; '.join(parts) or 'identity'})"

"""AE-based augmentation: a frozen autoencoder's codes, perturbed (noise, interpolation), decoded."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from lightning_genae.augmentation.common import drawn
from lightning_genae.datamodules.base import Batch, InMemoryDataModule, map_images, to_model_range
from lightning_genae.models import GenerativeModule
from lightning_genae.seeding import generator as seeded

# The most training codes the bank and the latent spread come from: a larger training split gives a seeded
# sample of them, so that neither the bank nor the time spent encoding it grows with the dataset.
BANK_CODES = 100_000
# Sampled items read at once (a multiple of map_images' batch).
BANK_BLOCK = 10_000


def bank_items(datamodule: InMemoryDataModule, seed: int) -> Iterable[Batch]:
    """The training items `LatentAugmenter.fit` takes: the split in blocks, or BANK_CODES drawn by `seed`."""
    size = datamodule.split_size("train")
    if size <= BANK_CODES:
        return datamodule.split_batches("train")
    drawn_items = torch.randperm(size, generator=seeded(seed, "augmenter bank"))[:BANK_CODES].sort().values
    return (datamodule.items_at("train", block) for block in drawn_items.split(BANK_BLOCK))


def _uniform(n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    return drawn(torch.rand, n, generator=generator, device=device)


def data_kind_of(autoencoder: object) -> str:
    """What an augmenter models: a family says so; any other `Autoencoder` is taken to be of images."""
    return getattr(autoencoder, "data_kind", "image")


class LatentAugmenter(nn.Module):
    """images in [-1, 1] -> encode -> perturb -> decode, differentiable in the images, weights frozen and
    always in eval mode; `fit` records each latent dimension's spread and a bank of training codes."""

    def __init__(self, autoencoder: GenerativeModule, noise: float, interp: float) -> None:
        super().__init__()
        self.autoencoder = autoencoder.requires_grad_(False).eval()
        self.noise = noise
        self.interp = interp
        latent_dim = autoencoder.latent_dim
        self.register_buffer("latent_std", torch.ones(latent_dim))
        self.register_buffer("bank_codes", torch.zeros(0, latent_dim))
        # Bank codes are sorted by label; a class's codes are bank_codes[start[c] : start[c] + count[c]].
        self.register_buffer("class_start", torch.zeros(0, dtype=torch.long))
        self.register_buffer("class_count", torch.zeros(0, dtype=torch.long))
        self.eval()

    def train(self, mode: bool = True) -> LatentAugmenter:
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.latent_std.device

    @torch.no_grad()
    def fit(
        self, batches: Iterable[Batch], prepare: Callable[[Tensor], Tensor] = to_model_range
    ) -> LatentAugmenter:
        """Latent spread and class bank from the training split's (items, int64 labels; -1 none) blocks."""
        codes, labels = [], []
        for block_items, block_labels in batches:
            codes.append(map_images(self.autoencoder.encode, block_items, self.device, prepare=prepare))
            labels.append(block_labels)
        codes = torch.cat(codes).to(self.device)
        self.latent_std = codes.std(dim=0) if len(codes) > 1 else torch.ones_like(codes[0])
        labels = torch.cat(labels).to(self.device)
        if bool((labels < 0).any()):
            labels = torch.zeros_like(labels)  # unlabelled: one class, any partner
        order = torch.argsort(labels, stable=True)
        self.bank_codes = codes[order]
        count = torch.bincount(labels, minlength=int(labels.max()) + 1)
        self.class_count = count
        self.class_start = torch.cumsum(count, 0) - count
        return self

    def bank_partners(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One random training code per label, of the same class (any class for unknown labels)."""
        labels = labels.to(self.device)
        known = (labels >= 0) & (labels < len(self.class_count))
        labels = torch.where(known, labels, torch.zeros_like(labels))
        start, count = self.class_start[labels], self.class_count[labels]
        # Unknown labels, and classes absent from the bank, draw from the whole bank.
        whole = ~known | (count == 0)
        start = torch.where(whole, torch.zeros_like(start), start)
        count = torch.where(whole, torch.full_like(count, len(self.bank_codes)), count)
        offset = (_uniform(len(labels), self.device, generator) * count).long().clamp(max=count - 1)
        return self.bank_codes[start + offset]

    def perturb(self, codes: Tensor, partners: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Move a fraction `interp` of the codes a uniform distance towards their partners, then add noise."""
        n = len(codes)
        towards = (_uniform(n, codes.device, generator) < self.interp).to(codes.dtype)
        weight = (towards * _uniform(n, codes.device, generator).to(codes.dtype))[:, None]
        moved = codes + weight * (partners.to(codes.dtype) - codes)
        noise = drawn(torch.randn, codes.shape, generator=generator, device=codes.device).to(codes.dtype)
        return moved + self.noise * self.latent_std.to(codes.dtype) * noise

    def forward(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        partners_from: Tensor | None = None,
    ) -> Tensor:
        """Augmented items (images in [-1, 1]); partners from the class bank with labels, else the codes of
        `partners_from` (one per image, in order), else the images among themselves."""
        codes = self.autoencoder.encode(images)
        if labels is not None and len(self.bank_codes):
            partners = self.bank_partners(labels, generator)
        elif partners_from is not None:
            partners = self.autoencoder.encode(partners_from)
        else:
            # Discriminator inputs have no labels (fakes): pair them among themselves.
            partners = codes[drawn(torch.randperm, len(codes), generator=generator, device=codes.device)]
        decoded = self.autoencoder.decode(self.perturb(codes, partners, generator))
        # Images live in [-1, 1]; normalised series have no bounds to clamp to.
        return decoded.clamp(-1.0, 1.0) if data_kind_of(self.autoencoder) == "image" else decoded


@torch.no_grad()
def reconstruction_mse(
    augmenter: LatentAugmenter, images: Tensor, prepare: Callable[[Tensor], Tensor] = to_model_range
) -> float:
    """Mean squared error of the augmenter's plain reconstructions in model units: how faithful it is."""
    if len(images) == 0:
        return 0.0
    recon = map_images(
        lambda batch: augmenter.autoencoder.decode(augmenter.autoencoder.encode(batch)),
        images,
        augmenter.device,
        prepare=prepare,
    )
    if data_kind_of(augmenter.autoencoder) == "image":
        recon = recon.clamp(-1, 1)
    return float(((recon.double() - prepare(images).double()) ** 2).mean())

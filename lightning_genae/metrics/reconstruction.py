"""Reconstruction quality of autoencoders: PSNR and SSIM per evaluation stage, synced across devices."""

from __future__ import annotations

from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure


class ReconstructionQuality(nn.Module):
    """`{stage}/psnr` and `{stage}/ssim` of reconstructions, on the [0, 1] scale (SSIM's luminance term is not
    shift-invariant, so [-1, 1] would match no paper); PSNR averaged over images, as papers report it."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleDict(
            {
                stage: MetricCollection(
                    {
                        "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
                        "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
                    },
                    prefix=f"{stage}/",
                )
                for stage in ("val", "test")
            }
        )

    def update(self, stage: str, reconstructions: Tensor, images: Tensor) -> MetricCollection:
        """Add a batch of images in [-1, 1]; returns the stage's collection for `LightningModule.log_dict`."""
        collection = self.stages[stage]
        collection.update((reconstructions.detach().float().clamp(-1, 1) + 1) / 2, (images.float() + 1) / 2)
        return collection

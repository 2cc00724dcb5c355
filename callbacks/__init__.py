"""Lightning callbacks shared by every model family."""

from callbacks.images import AugmentationPreview, InterpolationGrid, ReconstructionGrid, SampleGrid
from callbacks.sequences import (
    SaveNormaliser,
    SeriesAugmentationPreview,
    SeriesReconstructions,
    SeriesSamples,
)

__all__ = [
    "AugmentationPreview",
    "InterpolationGrid",
    "ReconstructionGrid",
    "SampleGrid",
    "SaveNormaliser",
    "SeriesAugmentationPreview",
    "SeriesReconstructions",
    "SeriesSamples",
]

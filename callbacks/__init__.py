"""Lightning callbacks shared by every model family."""

from callbacks.images import (
    AugmentationPreview,
    DiscriminatorReconstructionGrid,
    InterpolationGrid,
    ReconstructionGrid,
    SampleGrid,
)
from callbacks.random_state import RandomStateInCheckpoints
from callbacks.sequences import (
    SaveNormaliser,
    SeriesAugmentationPreview,
    SeriesReconstructions,
    SeriesSamples,
)

__all__ = [
    "AugmentationPreview",
    "DiscriminatorReconstructionGrid",
    "InterpolationGrid",
    "RandomStateInCheckpoints",
    "ReconstructionGrid",
    "SampleGrid",
    "SaveNormaliser",
    "SeriesAugmentationPreview",
    "SeriesReconstructions",
    "SeriesSamples",
]

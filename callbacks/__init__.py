"""Lightning callbacks shared by every model family."""

from lightning_genae.callbacks.images import (
    AugmentationPreview,
    DiscriminatorReconstructionGrid,
    InterpolationGrid,
    ReconstructionGrid,
    SampleGrid,
)
from lightning_genae.callbacks.random_state import RandomStateInCheckpoints, SeededEvaluation
from lightning_genae.callbacks.sequences import (
    SaveNormaliser,
    SeriesReconstructions,
    SeriesSamples,
)

__all__ = [
    "AugmentationPreview",
    "DiscriminatorReconstructionGrid",
    "InterpolationGrid",
    "RandomStateInCheckpoints",
    "SeededEvaluation",
    "ReconstructionGrid",
    "SampleGrid",
    "SaveNormaliser",
    "SeriesReconstructions",
    "SeriesSamples",
]

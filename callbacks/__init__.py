"""Lightning callbacks shared by every model family."""

from callbacks.images import AugmentationPreview, InterpolationGrid, ReconstructionGrid, SampleGrid

__all__ = ["AugmentationPreview", "InterpolationGrid", "ReconstructionGrid", "SampleGrid"]

"""Lightning callbacks shared by every model family."""

from callbacks.images import InterpolationGrid, ReconstructionGrid, SampleGrid

__all__ = ["InterpolationGrid", "ReconstructionGrid", "SampleGrid"]

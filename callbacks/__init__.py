"""Lightning callbacks shared by every model family."""

from callbacks.images import ReconstructionGrid, SampleGrid

__all__ = ["ReconstructionGrid", "SampleGrid"]

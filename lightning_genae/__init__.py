"""lightning-genae: autoencoder-based generative models (AE, VAE, DCGAN, BEGAN/EBGAN, VAE-GAN, AAE, recurrent
AE) as PyTorch Lightning modules on shared nets and DataModules, with AE-based augmentation beside DiffAugment
and ADA, and FD-style metrics named by their feature backbone.

The command line is `genae` (or `python run.py` in a clone). In Python: `lightning_genae.models.MODELS` and
`lightning_genae.datamodules.build_datamodule` for a family and its data under your own `pl.Trainer`;
`trainer_kwargs`, `callbacks_for`, `load_model`, `score_images` and `RunInterrupted` here; docs/python-api.md.
"""

from typing import TYPE_CHECKING

from lightning_genae.cluster import RunInterrupted
from lightning_genae.errors import ConfigError, DataError, GenaeError, TrainingDiverged
from lightning_genae.lazy import lazy_dir, lazy_getattr

if TYPE_CHECKING:
    from lightning_genae.api import callbacks_for, load_model, score_images, trainer_kwargs

__all__ = [
    "ConfigError",
    "DataError",
    "GenaeError",
    "RunInterrupted",
    "TrainingDiverged",
    "callbacks_for",
    "load_model",
    "score_images",
    "trainer_kwargs",
]
__version__ = "0.1.0"

# Names that pull in Lightning are resolved on first use, so `run.py --help` starts without it.
_LAZY_EXPORTS = dict.fromkeys(("trainer_kwargs", "callbacks_for", "load_model", "score_images"), "api")
# Hidden from type checkers, which would take any name the module lacks for a lazy one.
if not TYPE_CHECKING:
    __getattr__ = lazy_getattr(__name__, _LAZY_EXPORTS)
__dir__ = lazy_dir(globals(), _LAZY_EXPORTS)

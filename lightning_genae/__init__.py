from lightning_genae.errors import ConfigError, DataError, GenaeError, TrainingDiverged
from lightning_genae.lazy import lazy_getattr

__all__ = [
    "ConfigError",
    "DataError",
    "GenaeError",
    "TrainingDiverged",
    "callbacks_for",
    "load_model",
    "score_images",
    "trainer_kwargs",
]
__version__ = "0.1.0"

# Names that pull in Lightning are resolved on first use, so `run.py --help` starts without it.
__getattr__ = lazy_getattr(
    __name__,
    {
        **dict.fromkeys(("trainer_kwargs", "callbacks_for", "load_model"), "trainer"),
        "score_images": "evaluate",
    },
)

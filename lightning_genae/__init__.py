from typing import Any

from lightning_genae.errors import ConfigError, DataError, GenaeError, TrainingDiverged

__all__ = ["ConfigError", "DataError", "GenaeError", "TrainingDiverged", "callbacks_for", "trainer_kwargs"]
__version__ = "0.1.0"

# Names that pull in Lightning are resolved on first use, so `run.py --help` starts without it.
_LAZY = {"trainer_kwargs": "lightning_genae.trainer", "callbacks_for": "lightning_genae.trainer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_genae' has no attribute {name!r}")

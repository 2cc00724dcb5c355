from lightning_genae.errors import ConfigError, DataError, GenaeError, TrainingDiverged

__all__ = ["ConfigError", "DataError", "GenaeError", "TrainingDiverged"]
__version__ = "0.1.0"

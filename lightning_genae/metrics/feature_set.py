"""Every metric of generated against real features: the built-ins and `plugins.register_metric`'s, alike."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from lightning_genae.errors import ConfigError
from lightning_genae.metrics.distances import feature_metrics
from lightning_genae.metrics.names import GENERATIVE_KEYS, Direction, on_split

# Direction is passed on: a plug-in names which side of its metric is better with it.


@dataclass(frozen=True)
class GenerativeScore:
    """Named metrics of generated data (`fd_classifier`, ... without split) and their `backbone` (or None)."""

    values: dict[str, float]
    split: str
    n_real: int
    n_fake: int
    backbone: str | None

    def logged(self) -> dict[str, float]:
        """The values under the names they are logged with, split first: `val/fd_classifier`, ..."""
        return {on_split(name, self.split): value for name, value in self.values.items()}

    def record(self) -> dict[str, Any]:
        """What summary.json and eval.json print beside the numbers: split, sample counts, backbone."""
        return {"split": self.split, "n_real": self.n_real, "n_fake": self.n_fake, "backbone": self.backbone}


@dataclass(frozen=True)
class FeatureMetricSpec:
    """A registered feature-space metric: `compute(real, generated)` of [N, D] features, a finite number."""

    compute: Callable[[Tensor, Tensor], float]
    direction: Direction
    description: str


FEATURE_METRICS: dict[str, FeatureMetricSpec] = {}


def feature_metric_keys() -> tuple[str, ...]:
    """The kinds `score_feature_sets` returns, in order: the built-ins, then the registered ones."""
    return (*GENERATIVE_KEYS, *FEATURE_METRICS)


def score_feature_sets(real: Tensor, generated: Tensor, *, seed: int = 0) -> dict[str, float]:
    """Every feature-space metric of `generated` against `real`, by kind; a registered one must be finite."""
    computed = feature_metrics(real, generated, seed=seed)
    values = {key: float(computed[key]) for key in GENERATIVE_KEYS}
    for name, spec in FEATURE_METRICS.items():
        value = float(spec.compute(real, generated))
        if not math.isfinite(value):
            raise ConfigError(f"the registered metric {name} returned {value}; fix its plug-in")
        values[name] = value
    return values

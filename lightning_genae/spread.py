"""How a figure over seeds is written: the mean ± the sample standard deviation (n - 1); standard library
only, so the bench scripts start quickly."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def mean_std(values: Sequence[float], spec: str = ".4g") -> str:
    """`mean ± sample std` of `values`, each in the format `spec`; the spread of one value is `n/a`, not 0,
    which would read as seeds that agree."""
    spread = format(statistics.stdev(values), spec) if len(values) > 1 else "n/a"
    return f"{format(statistics.fmean(values), spec)} ± {spread}"

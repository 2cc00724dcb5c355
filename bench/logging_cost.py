"""Benchmark: what writing the training values costs per iteration inside one `run.py` run.

Times, with the wall clock around each call, the three places a training batch's values pass through at
its end: the module's `on_train_batch_end` (which records them, and writes the row at the batches
Lightning writes), and Lightning's logger connector's `on_batch_end` and `update_train_step_metrics`
(which read back and write what `self.log` collected, if anything). Prints milliseconds per iteration for
each, and their sum, as one JSON line after the run's own output. The clock reads add a little of their own.

    python bench/logging_cost.py RUN.PY ARGUMENTS
    e.g. python bench/logging_cost.py --model gan --data mnist --width 8 --batch-size 16 \
        --max-steps 1000 --eval-every 100000 --image-every 100000 --ckpt-every 100000 --backbone none
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from typing import Any

from pytorch_lightning.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

from lightning_genae.experiment.cli import main as run
from lightning_genae.models.base import GenerativeModule

seconds: dict[str, float] = defaultdict(float)
calls: dict[str, int] = defaultdict(int)


def timed(owner: type, name: str, label: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - started
            calls[label] += 1

    setattr(owner, name, wrapper)


def main() -> int:
    timed(GenerativeModule, "on_train_batch_end", "module on_train_batch_end")
    timed(_LoggerConnector, "on_batch_end", "Lightning on_batch_end")
    timed(_LoggerConnector, "update_train_step_metrics", "Lightning update_train_step_metrics")
    status = run(sys.argv[1:])
    iterations = calls["Lightning update_train_step_metrics"]
    if iterations:
        per_iteration = {label: round(1000 * total / iterations, 4) for label, total in seconds.items()}
        total_ms = round(1000 * sum(seconds.values()) / iterations, 4)
        print(json.dumps({**per_iteration, "total ms/it": total_ms, "iterations": iterations}))
    return status


if __name__ == "__main__":
    sys.exit(main())

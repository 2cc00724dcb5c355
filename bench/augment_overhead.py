"""Benchmark: what each augmentation adds to a GAN training iteration through `run.py`, and what the
augmenter autoencoder's own training costs.

Each `--augment` setting is one `run.py` run (`bench/overhead.py`'s framework side: evaluation, image grids
and checkpoints pushed past the end), timed in `--repeats` blocks of `--block` iterations after
`--warmup`; its figure is the median block and its ratio is over `none`. The augmenter (`ae`, `ae-d`) is
trained once, in a cache folder of this benchmark's own, and that training is timed on the wall clock.

    python bench/augment_overhead.py [--device cuda] [--augments none,ae,diffaug,ae-d,ada] [--data mnist]
        [--augmenter-steps 1000] [--json bench/augment_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from overhead import InterleavedClock, framework_run, versions


def timed_augmenter_training(seconds: list[float]) -> Any:
    """Wrap the augmenter's training so each call's wall time lands in `seconds`."""
    import lightning_genae.experiment.augmenter as latent

    train = latent.train_augmenter

    def timed(*args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        train(*args, **kwargs)
        seconds.append(time.perf_counter() - started)

    latent.train_augmenter = timed
    return train


def write_results(
    args: argparse.Namespace, device: torch.device, rows: list[dict[str, Any]], training_seconds: list[float]
) -> None:
    base = next((row["ms_per_iteration"] for row in rows if row["augment"] == "none"), None)
    for row in rows:
        if base:
            row["ratio_to_none"] = round(row["ms_per_iteration"] / base, 3)
    result = {
        "device": args.device,
        "data": args.data,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "clock": "process CPU time" if device.type == "cpu" else "wall",
        "threads": args.threads if device.type == "cpu" else None,
        "warmup": args.warmup,
        "block": args.block,
        "repeats": args.repeats,
        "augmenter_steps": args.augmenter_steps,
        "augmenter_training_s": [round(seconds, 1) for seconds in training_seconds],
        **versions(),
        "rows": rows,
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--augments", default="none,ae,diffaug,ae-d,ada")
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--augmenter-steps", type=int, default=1000, help="the run's default is 1000")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument("--json", default="bench/augment_overhead.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    iterations = args.warmup + args.block * args.repeats
    training_seconds: list[float] = []
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        # A cache of its own: the augmenter is trained (and timed) here, never taken from an earlier run.
        os.environ["GENAE_CACHE_DIR"] = str(Path(scratch) / "cache")
        timed_augmenter_training(training_seconds)
        for augment in args.augments.split(","):
            timer = InterleavedClock(
                device, args.precision, args.batch_size, args.warmup, args.block, bare=False
            )
            extra = ("--augment", augment)
            if augment in ("ae", "ae-d"):
                extra += ("--augmenter-steps", str(args.augmenter_steps))
            out = Path(scratch) / augment
            framework_run("gan", args.data, args.precision, accelerator, iterations, out, timer, extra)
            rows.append(
                {
                    "augment": augment,
                    "ms_per_iteration": round(statistics.median(timer.framework_ms), 2),
                    "blocks_ms": [round(value, 2) for value in timer.framework_ms],
                }
            )
            # Written after every setting, so a sweep stopped part-way keeps what it measured.
            write_results(args, device, rows, training_seconds)
    print(f"\n{'augment':10}{'ms/it':>9}{'vs none':>9}")
    for row in rows:
        ratio = row.get("ratio_to_none", float("nan"))
        print(f"{row['augment']:10}{row['ms_per_iteration']:>9.2f}{ratio:>9.3f}")
    for seconds in training_seconds:
        print(f"augmenter training ({args.augmenter_steps} iterations): {seconds:.1f} s wall")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

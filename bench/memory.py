"""Benchmark: the memory of a GAN run through `run.py`, sampled over its iterations.

Resident memory (RSS, from /proc/self/statm) is sampled every `--sample-every` training iterations by a
callback added to the run's own; the run keeps its logging, image grids, checkpoints and evaluation at the
cadences given. It says whether RSS is flat after warm-up: the growth from the first sample after
`--warmup` iterations (by default just after the first evaluation) to the last training sample, in MiB
and per 1,000 iterations. Peak RSS of the whole process (training and final evaluation) comes from
getrusage; on a GPU, the peak of allocated memory.

    python bench/memory.py [--data mnist] [--max-steps 10000] [--device cuda] [--json bench/memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
from pathlib import Path
from typing import Any

import torch
from overhead import added_callback, versions

PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_mib() -> float:
    """This process's resident memory now, in MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_MIB


class RssSampler:
    """A Lightning callback noting (iteration, RSS MiB) every `every` training iterations."""

    def __init__(self, every: int) -> None:
        from pytorch_lightning.callbacks import Callback

        self.samples: list[tuple[int, float]] = []
        outer = self

        class _Hook(Callback):
            def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
                if trainer.global_step % pl_module.optimizer_steps_per_iteration:
                    return
                if pl_module.iteration % every == 0:
                    outer.samples.append((pl_module.iteration, round(rss_mib(), 1)))

        self.callback = _Hook()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--max-steps", type=int, default=10_000)
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="iterations before RSS should be flat (default: just after the first evaluation, whose real "
        "features are computed once and kept)",
    )
    parser.add_argument("--sample-every", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--image-every", type=int, default=500)
    parser.add_argument("--eval-samples", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    parser.add_argument("--json", default="bench/memory.json")
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else args.eval_every + args.sample_every
    from lightning_genae.experiment.cli import main as run_main

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    sampler = RssSampler(args.sample_every)
    with tempfile.TemporaryDirectory() as scratch:
        argv = [
            *("--model", "gan", "--data", args.data, "--max-steps", str(args.max_steps)),
            *("--accelerator", "gpu" if args.device == "cuda" else "cpu", "--devices", "1"),
            *("--eval-every", str(args.eval_every), "--image-every", str(args.image_every)),
            *("--eval-samples", str(args.eval_samples), "--output", str(Path(scratch) / "run")),
        ]
        with added_callback(sampler.callback):
            code = run_main(argv)
    if code != 0:
        raise SystemExit(f"run.py {' '.join(argv)} failed with exit code {code}")
    # ru_maxrss is in KiB on Linux.
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    after_warmup = [(step, rss) for step, rss in sampler.samples if step >= warmup]
    (first_step, first_rss), (last_step, last_rss) = after_warmup[0], after_warmup[-1]
    growth = last_rss - first_rss
    per_thousand = growth / max(last_step - first_step, 1) * 1000
    result: dict[str, Any] = {
        "device": args.device,
        "data": args.data,
        "command": "run.py " + " ".join(argv[:-2]),
        "max_steps": args.max_steps,
        "peak_rss_mib": round(peak_rss, 1),
        "rss_after_warmup_mib": first_rss,
        "rss_at_end_of_training_mib": last_rss,
        "growth_after_warmup_mib": round(growth, 1),
        "growth_per_1000_iterations_mib": round(per_thousand, 2),
        "samples": sampler.samples,
        **versions(),
    }
    if args.device == "cuda":
        result["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    print(f"\nRSS after {first_step} iterations: {first_rss:.0f} MiB; after {last_step}: {last_rss:.0f} MiB")
    print(f"growth after warm-up: {growth:+.1f} MiB ({per_thousand:+.2f} MiB per 1,000 iterations)")
    print(f"peak RSS (training and final evaluation): {peak_rss:.0f} MiB")
    if "peak_gpu_allocated_mib" in result:
        print(f"peak GPU memory allocated: {result['peak_gpu_allocated_mib']:.0f} MiB")
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

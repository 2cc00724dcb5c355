"""Benchmark: what the divergence guard's loss check costs per training iteration.

Before: every loss was read back on the host each iteration (`bool(torch.isfinite(loss).all())`, a device
sync on a GPU). Now: `watch_losses` keeps the losses on the device and the guard reads them together every
`log_every_n_steps` (10) iterations. Two losses per iteration, as a GAN notes; median of repeats after a
warm-up, printed as microseconds per iteration over an empty loop.

    python bench/divergence_check.py [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from lightning_genae.models import GANModule

CHECK_EVERY = 10


def check_every_step(losses: dict[str, torch.Tensor]) -> None:
    """The check as it was: each loss read back on the host, every iteration."""
    for value in losses.values():
        if not torch.isfinite(value).all():
            raise RuntimeError("diverged")


def time_per_iteration(step: Callable[[int], None], iterations: int, device: torch.device) -> float:
    """Microseconds per iteration: wall time on a GPU (a sync is time lost), this process's CPU time on the
    CPU (one thread, so a machine shared with other work does not inflate it)."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = clock()
    for iteration in range(iterations):
        step(iteration)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (clock() - started) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    model = GANModule([1, 8, 8], width=8, latent_dim=8).to(device)
    data = torch.randn(64, 16, device=device)

    def losses() -> dict[str, torch.Tensor]:
        return {"train/loss_d": data.mean(), "train/loss_g": data.std()}

    def bare(iteration: int) -> None:
        losses()

    def before(iteration: int) -> None:
        check_every_step(losses())

    def now(iteration: int) -> None:
        model.watch_losses(**losses())
        if iteration % CHECK_EVERY == 0 and model.first_non_finite_loss() is not None:
            raise RuntimeError("diverged")

    steps = {"bare": bare, "before": before, "now": now}
    for step in steps.values():
        time_per_iteration(step, args.iterations // 10, device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(time_per_iteration(step, args.iterations, device))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"device {device}, torch {torch.__version__}, {args.repeats} x {args.iterations} iterations")
    for name in ("before", "now"):
        print(f"{name:>7}: {median[name] - median['bare']:6.1f} us per iteration for the loss check")


if __name__ == "__main__":
    main()

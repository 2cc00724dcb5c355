"""What each process of tests/library/test_adaptive.py's DDP test runs: a module of its own, so that a spawned
process imports torch and the controller only, not the CLI and Lightning (which took it ~50 s on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_genae.augmentation.adaptive import AdaptiveStrength

BATCH = 8


def logits_with_mean_sign(mean_sign: float, n: int = BATCH) -> torch.Tensor:
    """n logits whose signs average to `mean_sign` (a multiple of 2/n)."""
    positives = round((mean_sign + 1) / 2 * n)
    return torch.tensor([1.0] * positives + [-1.0] * (n - positives))


def observe_on_rank(rank: int, port: int, mean_signs: list[float], folder: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=len(mean_signs)
    )
    strength = AdaptiveStrength(target=0.4, interval=2, kimg=1.0)
    for _ in range(2):
        strength.observe(logits_with_mean_sign(mean_signs[rank]))
    torch.save({"p": strength.p, "rt": strength.rt}, Path(folder) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()

"""What a run prints of itself: one line about the model instead of Lightning's table, and the line that ends
training, both counted in training iterations (one D and one G update for a GAN)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.model_summary import get_human_readable_count
from torch import nn

from lightning_genae.progress import format_duration


def format_count(n: int) -> str:
    """Parameter counts as Lightning's summary writes them: 950, 1.2 K, 336 K, 4.1 M."""
    return get_human_readable_count(n).strip()


def describe_model(name: str, model: nn.Module, trainer: pl.Trainer) -> str:
    """One line instead of Lightning's summary table: parameters per network, device, precision, torch's
    CPU threads."""

    def count(module: nn.Module, trained: bool, recurse: bool = True) -> int:
        return sum(p.numel() for p in module.parameters(recurse=recurse) if p.requires_grad == trained)

    children = list(model.named_children())
    detail = ", ".join(
        f"{child} {format_count(n)}" for child, module in children if (n := count(module, True))
    )
    # Parts that are not trained here (the ae-d augmenter inside the discriminator's augmentation, the
    # generator's EMA copy) are named, so "frozen" is never read as a network that does not learn.
    frozen = [(child, count(module, False)) for child, module in children] + [
        ("other", count(model, False, recurse=False))
    ]
    if named := ", ".join(f"{child} {format_count(n)}" for child, n in frozen if n):
        detail += f"; not trained by the optimizers: {named}"
    devices = trainer.num_devices * trainer.num_nodes
    device = trainer.strategy.root_device.type
    where = f"{devices} x {device}" if devices > 1 else device
    threads = torch.get_num_threads()
    return (
        f"model: {name}, {format_count(count(model, True))} parameters"
        + (f" ({detail})" if detail else "")
        + f", {where}, {trainer.precision}, {threads} CPU thread{'s' if threads != 1 else ''}"
    )


def describe_training(first: int, last: int, seconds: float) -> str:
    """The end-of-training line in iterations, e.g. "trained 2000 iterations in 2 min 10 s".

    No rate: the time includes the validations, so it would disagree with the bar's training rate.
    """
    done = last - first
    span = f"{done} iteration{'s' if done != 1 else ''}"
    if first:
        span += f" ({first} -> {last})"
    return f"trained {span} in {format_duration(seconds)}"

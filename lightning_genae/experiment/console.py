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

    def trainable(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    networks = [(child, trainable(module)) for child, module in model.named_children()]
    detail = ", ".join(f"{child} {format_count(count)}" for child, count in networks if count)

    # Parts that are not trained here (the ae-d augmenter inside the discriminator's augmentation, the
    # generator's EMA copy) are named, so "frozen" is never read as a network that does not learn.
    def frozen(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if not p.requires_grad)

    parts = [(child, frozen(module)) for child, module in model.named_children()]
    named = ", ".join(f"{child} {format_count(count)}" for child, count in parts if count)
    rest = sum(p.numel() for p in model.parameters(recurse=False) if not p.requires_grad)
    if rest:
        named += (", " if named else "") + f"other {format_count(rest)}"
    if named:
        detail += f"; not trained by the optimizers: {named}"
    devices = trainer.num_devices * trainer.num_nodes
    device = trainer.strategy.root_device.type
    where = f"{devices} x {device}" if devices > 1 else device
    threads = torch.get_num_threads()
    return (
        f"model: {name}, {format_count(trainable(model))} parameters"
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

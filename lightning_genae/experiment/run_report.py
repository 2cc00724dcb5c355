"""What a run reports beside its metrics: the machine and versions, the final table, summary.json, and the
lines about its model and its training, counted in training iterations (one D and one G update for a GAN)."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.model_summary import get_human_readable_count
from torch import nn

from lightning_genae.checkpoint import FIXED_SCHEDULE_ADVICE
from lightning_genae.metrics.names import Direction, try_parse
from lightning_genae.progress import format_duration
from lightning_genae.source import current_source

VERSIONED_PACKAGES = (
    "torch",
    "torchvision",
    "pytorch-lightning",
    "torchmetrics",
    "wandb",
    "numpy",
    "lightning-genae",
)


def environment_info(trainer: pl.Trainer) -> dict[str, Any]:
    """What a number was measured on: devices, the precision that ran, versions, the source's commit."""
    device = trainer.strategy.root_device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "device": f"{trainer.num_devices} x {device.type} ({name})",
        # Lightning's, not the one asked for: --precision 16-mixed runs as bf16-mixed on a CPU.
        "precision": str(trainer.precision),
        "num_nodes": trainer.num_nodes,
        "world_size": trainer.world_size,
        "versions": versions,
        "source": current_source(),
    }


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Scalar metrics as floats; "step" is the x-axis override, not a metric."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if key != "step" and torch.as_tensor(value).numel() == 1
    }


def format_metrics_table(metrics: dict[str, float], headline: str | None = None) -> str:
    """One metric per line, alphabetical, under the headline metric (marked, ruled off) where there is one."""
    if not metrics:
        return "(no metrics)"
    width = max(len(key) for key in metrics)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  ----------"]
    if headline in metrics:
        parsed = try_parse(headline)
        said = "" if parsed is None or parsed.direction is Direction.NONE else f", {parsed.direction.value}"
        lines += [f"{headline.ljust(width)}  {metrics[headline]:.6g}  <- headline{said}", ""]
    lines += [f"{key.ljust(width)}  {metrics[key]:.6g}" for key in sorted(metrics) if key != headline]
    return "\n".join(lines)


def format_final_line(metrics: dict[str, float], headline: str | None) -> str:
    """The end of a run in one line, for a run among many (a grid's cell): its headline and the count."""
    shown = f"{headline} {metrics[headline]:.6g}; " if headline in metrics else ""
    return f"final: {shown}{len(metrics)} metrics in summary.json"


# Discriminator outputs (logits) this large come only from runaway weights: a sigmoid saturates near 20, a
# hinge margin is 1, and a healthy run stays within tens.
SATURATED_LOGIT = 1e4


def collapse_warning(metrics: dict[str, float], lr: float | None) -> str | None:
    """One line when the final training values show a saturated discriminator (loss 0, outputs beyond
    SATURATED_LOGIT: finite, so no divergence is reported), else None; `lr`: None under a fixed schedule."""
    outputs = [abs(metrics[key]) for key in ("train/d_real", "train/d_fake") if key in metrics]
    if metrics.get("train/loss_d") != 0.0 or not outputs or max(outputs) < SATURATED_LOGIT:
        return None
    advice = f"; lower --lr (this run used {lr:g})" if lr is not None else f"; {FIXED_SCHEDULE_ADVICE}"
    return (
        f"warning: the discriminator saturated (train/loss_d 0, outputs up to {max(outputs):.3g}): the "
        f"generator has likely collapsed and its samples stopped improving{advice}"
    )


def format_count(n: int) -> str:
    """Parameter counts as Lightning's summary writes them: 950, 1.2 K, 336 K, 4.1 M."""
    return get_human_readable_count(n).strip()


def describe_model(name: str, model: nn.Module, trainer: pl.Trainer) -> str:
    """One line instead of Lightning's summary table: parameters per network, device, precision, threads."""

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
    """The end-of-training line, e.g. "trained 2000 iterations in 2 min 10 s" (no rate: the time includes
    the validations, so it would disagree with the bar's training rate)."""
    done = last - first
    span = f"{done} iteration{'s' if done != 1 else ''}"
    if first:
        span += f" ({first} -> {last})"
    return f"trained {span} in {format_duration(seconds)}"

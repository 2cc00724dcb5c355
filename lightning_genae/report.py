"""What a run reports beside its metrics: the machine and versions, the final table, summary.json."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import pytorch_lightning as pl
import torch

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
    """Devices, world size and package versions: what a number was measured on."""
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
        "num_nodes": trainer.num_nodes,
        "world_size": trainer.world_size,
        "versions": versions,
    }


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Scalar metrics as floats; "step" is the x-axis override, not a metric."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if key != "step" and torch.as_tensor(value).numel() == 1
    }


def format_metrics_table(metrics: dict[str, float]) -> str:
    if not metrics:
        return "(no metrics)"
    width = max(len(key) for key in metrics)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  ----------"]
    lines += [f"{key.ljust(width)}  {value:.6g}" for key, value in sorted(metrics.items())]
    return "\n".join(lines)

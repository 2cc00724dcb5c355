"""Where training batches are indexed from (`data_on_device`): on an accelerator a batch is an index of the
stored split, with no loader, collation or host-to-device copy per step (`loaders.DeviceBatches`)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_genae.errors import OptionError

DATA_ON_DEVICE = ("auto", "on", "off")
# `auto` keeps a training split on an accelerator when it takes at most this share of its memory (the networks
# and the evaluation need the rest): CelebA at 64x64 (2.4 GB) goes on a GPU of 10 GB or more.
AUTO_DEVICE_SHARE = 0.25
# ... and on an accelerator whose memory torch does not report (mps), when it is at most this many bytes.
AUTO_DEVICE_BYTES = 1 << 30


def check_data_on_device(setting: str) -> None:
    """`data_on_device` is one of DATA_ON_DEVICE (`on` indexes on the device, where workers have no part)."""
    if setting not in DATA_ON_DEVICE:
        raise OptionError("data_on_device", f"{setting!r} is not one of: {', '.join(DATA_ON_DEVICE)}")


def batch_device(
    setting: str, num_workers: int, device: torch.device, size_bytes: int
) -> torch.device | None:
    """The device training batches of a split of `size_bytes` are indexed on, or None for a host DataLoader
    (`auto`: when loader workers are asked for or the split is too large for the accelerator)."""
    if setting == "off" or (setting == "auto" and num_workers > 0):
        return None
    if setting == "on" or device.type == "cpu":
        return device
    if device.type == "cuda":
        limit = AUTO_DEVICE_SHARE * torch.cuda.get_device_properties(device).total_memory
    else:
        limit = AUTO_DEVICE_BYTES
    return device if size_bytes <= limit else None


def host_to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """A host tensor on `device` without a wait for the device: `.to("cuda")` from pageable memory waits for
    every queued kernel, while a copy from pinned memory is queued like a kernel. Elsewhere `.to(device)`."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)

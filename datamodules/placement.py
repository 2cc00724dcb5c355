"""Where training batches are indexed from (`data_on_device`), decided without importing Lightning.

The in-memory splits are small enough to keep on an accelerator, where a batch is an index of the stored
tensor: no loader, no collation, no host-to-device copy per step (`datamodules.loaders.DeviceBatches`).
The command line checks the setting before anything heavy is imported, so it lives here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_genae.errors import ConfigError, OptionError

DATA_ON_DEVICE = ("auto", "on", "off")
# `auto` keeps a training split on an accelerator when it takes at most this share of the accelerator's
# memory (the networks, their activations and the evaluation need the rest): MNIST's 47 MB and CIFAR-10's
# 150 MB go on any GPU, CelebA at 64x64 (2.4 GB) on one of 10 GB or more.
AUTO_DEVICE_SHARE = 0.25
# ... and on an accelerator whose memory torch does not report (mps), when it is at most this many bytes.
AUTO_DEVICE_BYTES = 1 << 30


def check_data_on_device(setting: str, num_workers: int) -> None:
    """`data_on_device` is one of DATA_ON_DEVICE, and `on` does not come with loader workers."""
    if setting not in DATA_ON_DEVICE:
        raise OptionError("data_on_device", f"{setting!r} is not one of: {', '.join(DATA_ON_DEVICE)}")
    if setting == "on" and num_workers > 0:
        raise ConfigError(
            f"data_on_device on batches on the device, where num_workers {num_workers} has nothing to do; "
            "drop num_workers or use data_on_device off"
        )


def batch_device(
    setting: str, num_workers: int, device: torch.device, size_bytes: int
) -> torch.device | None:
    """The device training batches of a split of `size_bytes` are indexed on, or None for a host DataLoader.

    `on`: the run's device. `auto`: the run's device unless loader workers were asked for or, on an
    accelerator, the split would take more than AUTO_DEVICE_SHARE of its memory. On the CPU the split is
    already where the model is, so indexing it directly only saves the loader's work per batch.
    """
    check_data_on_device(setting, num_workers)
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
    """A host tensor (random draws of a seeded CPU generator, say) on `device`, without a wait for the device.

    `.to("cuda")` from ordinary (pageable) memory synchronises the stream: the host waits until every kernel
    queued so far has run, which a training step would pay at each such copy. From pinned memory the copy
    is queued like a kernel, and the caching host allocator keeps the pinned block until it has finished.
    Elsewhere this is `.to(device)`, so the CPU path and its numbers are unchanged.
    """
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)

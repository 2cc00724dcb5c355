"""Without a CUDA device, an optimizer step does not load the NVML library to ask whether CUDA is there."""

from __future__ import annotations

import pytest
import torch

from lightning_genae.experiment import trainer
from lightning_genae.experiment.trainer import NVML_CUDA_CHECK, skip_repeated_cuda_probes


def nvml_loads_per_adam_step(monkeypatch: pytest.MonkeyPatch, steps: int = 3) -> int:
    """How many times torch asks NVML for the device count during `steps` Adam steps."""
    calls = []
    original = torch.cuda._raw_device_count_nvml
    monkeypatch.setattr(torch.cuda, "_raw_device_count_nvml", lambda: calls.append(1) or original())
    parameter = torch.nn.Parameter(torch.zeros(4))
    optimizer = torch.optim.Adam([parameter])
    for _ in range(steps):
        parameter.grad = torch.ones(4)
        optimizer.step()
    return len(calls)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a CUDA device")
def test_adam_steps_skip_the_nvml_probe_without_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NVML_CUDA_CHECK, "1")  # as importing Lightning leaves it
    if torch.backends.cuda.is_built():
        # torch's CUDA build on a CPU machine: the probe Lightning's setting makes Adam repeat per step.
        assert nvml_loads_per_adam_step(monkeypatch) >= 3
    skip_repeated_cuda_probes()
    assert nvml_loads_per_adam_step(monkeypatch) == 0
    assert not torch.cuda.is_available()


def test_the_setting_is_kept_where_a_device_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NVML_CUDA_CHECK, "1")
    monkeypatch.setattr(trainer.torch.cuda, "is_available", lambda: True)
    skip_repeated_cuda_probes()
    assert trainer.os.environ[NVML_CUDA_CHECK] == "1"


def test_nothing_is_set_where_lightning_set_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NVML_CUDA_CHECK, raising=False)
    skip_repeated_cuda_probes()
    assert NVML_CUDA_CHECK not in trainer.os.environ

"""--data-on-device: training batches indexed from the stored tensors on the run's device, no loader.

The batches must be exactly those of the DataLoader path (same order per seed and epoch, full batches),
so a run gives the same numbers either way and a checkpoint of one resumes with the other.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny import ON_CPU, TINY_RUN

from lightning_genae.datamodules import build_datamodule, placement
from lightning_genae.datamodules.loaders import DeviceBatches, ResumableLoader
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.cli import main

RUN = [*TINY_RUN, *ON_CPU, "--model", "gan", "--train-size", "200", "--eval-every", "4", "--image-every", "4"]
RUN += ["--ckpt-every", "4", "--eval-samples", "100"]
MIB = 1 << 20


def digits(setting: str = "auto", **options):
    return build_datamodule(
        "digits", data_dir=".", batch_size=32, train_size=200, data_on_device=setting, **options
    )


def labels_of(batches) -> list[list[int]]:
    return [labels.tolist() for _, labels in batches]


# ----- the decision -----


def test_auto_indexes_on_the_cpu_unless_loader_workers_were_asked_for():
    cpu = torch.device("cpu")
    assert placement.batch_device("auto", 0, cpu, 10**12) == cpu
    assert placement.batch_device("auto", 2, cpu, MIB) is None
    assert placement.batch_device("off", 0, cpu, MIB) is None
    assert placement.batch_device("on", 0, cpu, MIB) == cpu


def test_auto_puts_a_split_on_a_gpu_only_when_it_takes_at_most_a_quarter_of_its_memory(monkeypatch):
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=400 * MIB)
    )
    gpu = torch.device("cuda", 0)
    assert placement.batch_device("auto", 0, gpu, 100 * MIB) == gpu
    assert placement.batch_device("auto", 0, gpu, 100 * MIB + 1) is None
    assert placement.batch_device("on", 0, gpu, 10**12) == gpu, "on is the user's choice, whatever the size"
    other = torch.device("mps")
    assert placement.batch_device("auto", 0, other, placement.AUTO_DEVICE_BYTES) == other
    assert placement.batch_device("auto", 0, other, placement.AUTO_DEVICE_BYTES + 1) is None


def test_an_unknown_setting_is_a_one_line_error_naming_the_argument():
    with pytest.raises(ConfigError, match="is not one of: auto, on, off"):
        placement.check_data_on_device("sometimes")
    with pytest.raises(ConfigError, match="is not one of: auto, on, off") as refused:
        digits("sometimes")
    assert "data_on_device" in str(refused.value) and "--" not in str(refused.value)


# ----- the batches -----


def test_the_batches_are_the_loaders_for_every_epoch():
    on, off = digits("on"), digits("off")
    device_batches = on.loader_over(*on.split_tensors("train"), train=True)
    loader = off.loader_over(*off.split_tensors("train"), train=True)
    assert isinstance(device_batches, DeviceBatches) and isinstance(loader, ResumableLoader)
    assert len(device_batches) == len(loader) == 200 // 32
    for _ in range(3):
        expected = list(loader)
        got = list(device_batches)
        assert len(got) == len(expected)
        for (images, labels), (want_images, want_labels) in zip(got, expected, strict=True):
            assert torch.equal(images, want_images) and torch.equal(labels, want_labels)
            assert images.dtype == torch.uint8, "stored items: the model's input is made on the device"


def test_state_resumes_part_way_through_an_epoch_on_either_path():
    on, off = digits("on"), digits("off")
    uninterrupted = labels_of(on.loader_over(*on.split_tensors("train"), train=True))
    stopped = off.loader_over(*off.split_tensors("train"), train=True)
    seen = []
    for _, labels in stopped:
        seen.append(labels.tolist())
        if len(seen) == 4:
            break
    assert stopped.state_dict() == {"epoch": 0, "batches": 4}
    resumed = on.loader_over(*on.split_tensors("train"), train=True)
    resumed.load_state_dict(stopped.state_dict())
    assert seen + labels_of(resumed) == uninterrupted
    assert resumed.state_dict() == {"epoch": 0, "batches": 6}
    second_epoch = labels_of(resumed)
    assert second_epoch != uninterrupted and resumed.state_dict() == {"epoch": 1, "batches": 6}


def test_ranks_share_each_global_batch_without_overlap():
    images, labels = digits().split_tensors("train")
    whole = DeviceBatches(images, labels, batch_size=32, seed=0)
    halves = [
        DeviceBatches(images, labels, batch_size=16, seed=0, rank=rank, world_size=2) for rank in (0, 1)
    ]
    assert len(halves[0]) == len(halves[1]) == len(whole)
    for (whole_images, _), (first, _), (second, _) in zip(whole, *halves, strict=True):
        assert torch.equal(torch.cat([first, second]), whole_images)


# ----- through run.py -----


def run(tmp_path: Path, name: str, *extra: str) -> Path:
    folder = tmp_path / name
    assert main([*RUN, *extra, "--output", str(folder)]) == 0
    return folder


def final_metrics(folder: Path) -> dict[str, float]:
    return json.loads((folder / "summary.json").read_text())["final_metrics"]


@pytest.mark.slow
def test_a_run_gives_the_same_numbers_on_either_path_and_resumes_across_them(tmp_path):
    on = run(tmp_path, "on", "--max-steps", "8", "--data-on-device", "on")
    off = run(tmp_path, "off", "--max-steps", "8", "--data-on-device", "off")
    assert (on / "metrics.csv").read_bytes() == (off / "metrics.csv").read_bytes()
    half = run(tmp_path, "half", "--max-steps", "4", "--data-on-device", "off")
    resumed = tmp_path / "resumed"
    resume = [
        "--resume",
        str(half / "checkpoints" / "last.ckpt"),
        "--max-steps",
        "8",
        "--data-on-device",
        "on",
    ]
    assert main([*resume, "--output", str(resumed)]) == 0
    assert final_metrics(resumed) == final_metrics(on)


def test_host_draws_reach_a_gpu_through_pinned_memory_without_a_wait(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    real_to = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        calls.append(("to", str(args[0]), kwargs.get("non_blocking", False)))
        return real_to(self, "cpu")

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    draws = torch.rand(4)
    placement.host_to_device(draws, torch.device("cuda", 0))
    assert calls == ["pin", ("to", "cuda:0", True)]
    calls.clear()
    assert placement.host_to_device(draws, torch.device("cpu")) is draws or calls == [("to", "cpu", False)]
    assert "pin" not in calls, "the CPU path is a plain .to: same tensors, same numbers"

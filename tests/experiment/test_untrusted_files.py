"""Files the project did not write (data folders, checkpoints, caches) are read without running code."""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_genae.datamodules.cifar10 import CIFAR10DataModule, read_cifar_batch
from lightning_genae.errors import DataError
from lightning_genae.experiment.cli import main

pytestmark = pytest.mark.quick

NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar(data_dir: Path, per_batch: int = 20) -> Path:
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in NAMES:
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            b"labels": [i % 10 for i in range(per_batch)],
            b"filenames": [f"{i}.png".encode() for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


class RunsAShellCommand:
    """Unpickling this calls os.system: what a planted data file would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def one_error_line(captured: pytest.CaptureFixture[str]) -> str:
    return one_error_line_of(captured.readouterr().err)


def one_error_line_of(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_cifar_batch_that_runs_a_command_is_refused_without_running_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_cifar(tmp_path / "data")
    marker = tmp_path / "ran"
    (folder / "data_batch_1").write_bytes(
        pickle.dumps({b"data": RunsAShellCommand(f"touch {shlex.quote(str(marker))}")}, protocol=2)
    )
    out = tmp_path / "run"
    options = "--model ae --data cifar10 --width 8 --latent-dim 8 --batch-size 8 --max-steps 1"
    code = main([*options.split(), "--data-dir", str(tmp_path / "data"), "--output", str(out)])
    assert code == 2
    line = one_error_line(capsys)
    assert "is not a CIFAR-10 batch: it asks to run posix.system" in line
    assert "delete it and re-download" in line and str(folder / "data_batch_1") in line
    assert not marker.exists()
    assert not out.exists()


@pytest.mark.parametrize(
    ("module", "name"), [("builtins", "eval"), ("numpy", "load"), ("subprocess", "Popen"), ("os", "system")]
)
def test_any_global_outside_the_format_is_refused(tmp_path: Path, module: str, name: str) -> None:
    path = tmp_path / "data_batch_1"
    # A protocol-2 GLOBAL opcode naming `module.name`, called with no arguments.
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R.")
    with pytest.raises(DataError, match=f"it asks to run {module}.{name}; delete it and re-download"):
        read_cifar_batch(path)


def test_an_object_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.array([1, 2], dtype=object), b"labels": [1, 2]}, protocol=2))
    with pytest.raises(DataError, match="cannot be read as a CIFAR-10 batch"):
        read_cifar_batch(path)


def test_batches_as_python_2_and_numpy_1_wrote_them_are_read(tmp_path: Path) -> None:
    """The official files name numpy.core.multiarray._reconstruct and hold Python 2 byte strings."""
    folder = write_cifar(tmp_path)
    for name in NAMES:
        path = folder / name
        path.write_bytes(path.read_bytes().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    assert b"numpy.core.multiarray" in (folder / "test_batch").read_bytes()
    datamodule = CIFAR10DataModule(tmp_path, batch_size=8)
    datamodule.setup()
    images, labels = datamodule.split_tensors("test")
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [i % 10 for i in range(20)]


# ----- checkpoints: torch's advice to load unsafely never reaches the user


class Opaque:
    """A class torch's safe loader does not know."""


@pytest.mark.parametrize("flag", ["--resume", "--evaluate", "--augment-ckpt"])
def test_a_raw_pickle_as_a_checkpoint_is_our_one_line_without_torchs_advice(flag, tmp_path, capsys):
    path = tmp_path / "raw.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "global_step": 3}, protocol=4))
    out = tmp_path / "run"
    extra = ["--model", "ae", "--data", "digits", "--augment", "ae"] if flag == "--augment-ckpt" else []
    assert main([*extra, flag, str(path), "--output", str(out)]) == 2
    captured = capsys.readouterr()
    line = one_error_line_of(captured.err)
    assert f"{path} is not a readable checkpoint" in line
    assert "weights_only" not in captured.err + captured.out
    assert not out.exists()


def test_a_pickled_object_in_a_torch_file_is_described_without_torchs_advice(tmp_path):
    from lightning_genae.errors import describe_error

    path = tmp_path / "object.pt"
    torch.save({"weights": torch.zeros(2), "extra": Opaque()}, path)
    with pytest.raises(pickle.UnpicklingError) as error:
        torch.load(path, weights_only=True)
    assert "weights_only" in str(error.value), "the control: torch's message advises unsafe loading"
    described = describe_error(error.value)
    assert "weights_only" not in described and "\n" not in described
    assert "test_untrusted_files.Opaque" in described and "nothing in it was run" in described


@pytest.mark.parametrize("form", ["torch file", "raw pickle"])
def test_a_familys_load_from_checkpoint_refuses_code_in_one_line_without_running_it(form, tmp_path):
    """Lightning's inherited loader is public on every family: a file that would run code is refused as the
    framework's loaders refuse it, without torch's advice to load it unsafely."""
    from lightning_genae.errors import ConfigError
    from lightning_genae.models.gan import GANModule

    marker = tmp_path / "ran"
    payload = {"state_dict": {}, "hyper_parameters": RunsAShellCommand(f"touch {marker}")}
    path = tmp_path / "evil.ckpt"
    if form == "torch file":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ConfigError) as refused:
        GANModule.load_from_checkpoint(path)
    assert "weights_only" not in str(refused.value) and "\n" not in str(refused.value)
    assert not marker.exists()


def test_load_from_checkpoint_given_weights_only_false_loads_a_trusted_file_as_lightning_does(tmp_path):
    from lightning_genae.errors import ConfigError
    from lightning_genae.models import AutoencoderModule

    model = AutoencoderModule((1, 8, 8), width=4, latent_dim=4)
    path = tmp_path / "trusted.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": "2.6.0",
            "saved_from": Path("/my/own/run"),  # a pickled object, from a file the user trusts
        },
        path,
    )
    with pytest.raises(ConfigError, match="a pickled pathlib"):
        AutoencoderModule.load_from_checkpoint(path)
    loaded = AutoencoderModule.load_from_checkpoint(path, weights_only=False)
    pairs = zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


# ----- other files the project reads but did not write


def test_a_config_file_with_a_python_tag_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "ran"
    config = tmp_path / "c.yaml"
    config.write_text(f"model: ae\nlr: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["--config", str(config), "--print-config"]) == 2
    line = one_error_line(capsys)
    assert f"--config {config}: not valid YAML" in line
    assert not marker.exists()


@pytest.mark.parametrize(("text", "fact"), [("- model: ae\n", "expected a mapping"), ("", None)])
def test_a_config_file_that_is_no_mapping_is_one_line_and_an_empty_one_sets_nothing(
    tmp_path, capsys, text, fact
):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    assert main(["--config", str(config), "--print-config"]) == (2 if fact else 0)
    if fact:
        assert f"--config {config}: {fact}" in one_error_line(capsys)


def test_a_celeba_cache_holding_python_objects_is_refused_without_running_them(tmp_path):
    from lightning_genae.datamodules.celeba import CACHE_FILE, CelebADataModule

    folder = tmp_path / "celeba"
    folder.mkdir()
    marker = tmp_path / "ran"
    payload = np.array([RunsAShellCommand(f"touch {shlex.quote(str(marker))}")], dtype=object)
    np.savez(folder / CACHE_FILE, train=payload, val=payload, test=payload)
    with pytest.raises(DataError, match="is corrupt .*Object arrays cannot be loaded"):
        CelebADataModule(tmp_path).setup()
    assert not marker.exists()

"""The checkpoint seam (lightning_genae/checkpoint.py): what a checkpoint holds, and how a bad one is refused.

A checkpoint may come from someone else, so every way in (`--resume`, `--evaluate`, `--augment-ckpt`) must
refuse an unreadable file, or one holding more than tensors and plain values, with one line and exit 2,
before anything is written and without running any code stored in the file.
"""

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from refusals import one_line

from lightning_genae.checkpoint import CONFIG_KEY, RunCheckpoint, run_folder_of
from lightning_genae.errors import ConfigError, describe_error
from lightning_genae.experiment.cli import main
from lightning_genae.experiment.train import WALL_TIME_KEY
from lightning_genae.models import AutoencoderModule, GANModule
from lightning_genae.run_files import PER_INVOCATION, last_checkpoint


class WritesAFileWhenUnpickled:
    """Unpickling this calls `open(marker, "w")`: the file appears only if a loader ran the pickled call."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def contents_of(run_dir: Path) -> dict:
    return torch.load(last_checkpoint(run_dir), map_location="cpu", weights_only=True)


def test_a_checkpoint_holds_the_run_configuration_as_plain_values(tiny_ae_run):
    contents = contents_of(tiny_ae_run)
    stored = contents[CONFIG_KEY]
    assert all(isinstance(value, (str, int, float, bool, list, type(None))) for value in stored.values())
    assert stored["model"] == "ae" and stored["max_steps"] == 3 and stored["output"] == str(tiny_ae_run)
    assert contents["global_step"] == 3
    recorded = yaml.safe_load((tiny_ae_run / "config.yaml").read_text())
    checkpoint = RunCheckpoint.load(last_checkpoint(tiny_ae_run), "--resume")
    # What a resume or --evaluate starts from is the experiment config.yaml records, minus this invocation.
    assert checkpoint.stored_config("--resume") == {
        key: value for key, value in recorded.items() if key not in PER_INVOCATION
    }


def test_a_checkpoint_finds_its_run_folder(tiny_ae_run, tmp_path):
    assert RunCheckpoint.load(last_checkpoint(tiny_ae_run), "--resume").run_folder == tiny_ae_run
    assert run_folder_of(tmp_path / "run" / "checkpoints" / "best.ckpt") == tmp_path / "run"
    assert run_folder_of(tmp_path / "elsewhere" / "model.ckpt") == tmp_path / "elsewhere"


def test_restore_rebuilds_the_trained_module_and_refuses_another_family(tiny_ae_run):
    checkpoint = RunCheckpoint.load(last_checkpoint(tiny_ae_run), "--evaluate")
    module = checkpoint.restore(AutoencoderModule, "--evaluate")
    assert not module.training and module.latent_dim == 8
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, checkpoint.contents["state_dict"][name]), name
    with pytest.raises(ConfigError) as error:
        checkpoint.restore(GANModule, "--evaluate")
    assert len(str(error.value).splitlines()) == 1 and "GANModule" in str(error.value)


@pytest.fixture()
def payload_checkpoint(tiny_ae_run, tmp_path) -> tuple[Path, Path]:
    """A real run's checkpoint with one pickled object added that would write a marker file if unpickled."""
    marker = tmp_path / "payload-ran"
    contents = contents_of(tiny_ae_run)
    contents["extra"] = WritesAFileWhenUnpickled(marker)
    path = tmp_path / "payload.ckpt"
    torch.save(contents, path)
    assert not marker.exists()
    return path, marker


def test_the_payload_would_run_if_the_file_were_unpickled(payload_checkpoint):
    # The control for the tests below: without weights_only the marker is written.
    path, marker = payload_checkpoint
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--resume", "{ckpt}"],
        ["--evaluate", "{ckpt}"],
        [
            "--model",
            "gan",
            "--data",
            "digits",
            "--augment",
            "ae",
            "--augment-ckpt",
            "{ckpt}",
            "--max-steps",
            "2",
        ],
    ],
    ids=["resume", "evaluate", "augment-ckpt"],
)
def test_a_pickled_object_in_a_checkpoint_is_refused_without_running(
    flags, payload_checkpoint, tmp_path, capsys
):
    path, marker = payload_checkpoint
    output = tmp_path / "run"
    args = [flag.format(ckpt=path) for flag in flags]
    assert main([*args, "--output", str(output)]) == 2
    one_line(capsys, str(path), "a pickled io.open")
    assert not marker.exists(), "loading the checkpoint ran code stored in it"
    assert not output.exists()


def test_a_quoted_error_is_one_line_without_terminal_escapes():
    error = RuntimeError("Load failed, \x1b[1monly if you trust the source\x1b[0m.\n\tmore advice")
    assert describe_error(error) == "RuntimeError: Load failed, only if you trust the source."
    # A first line that introduces what follows (torchvision's download error) ends with the cause.
    download = RuntimeError("Error downloading x.gz:\nTried https://a/, got:\n<urlopen error offline>\n")
    assert describe_error(download) == "RuntimeError: Error downloading x.gz: <urlopen error offline>"


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a checkpoint", "a zip of other files"])
@pytest.mark.parametrize("flag", ["--resume", "--evaluate"])
def test_a_damaged_checkpoint_is_one_line_and_exit_2(flag, damage, tiny_ae_run, tmp_path, capsys):
    import zipfile

    data = last_checkpoint(tiny_ae_run).read_bytes()
    path = tmp_path / "damaged.ckpt"
    if damage == "a zip of other files":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("hello.txt", "hello")
    else:
        path.write_bytes(
            {
                "truncated": data[: len(data) // 2],
                "empty": b"",
                "not a checkpoint": b"these are not the bytes of a zip file",
            }[damage]
        )
    output = tmp_path / "run"
    assert main([flag, str(path), "--output", str(output)]) == 2
    one_line(capsys, flag, str(path))
    assert not output.exists()


@pytest.fixture()
def checkpoint_without_config(tiny_ae_run, tmp_path) -> Path:
    """A Lightning checkpoint of the tiny run with the lightning-genae configuration taken out."""
    contents = contents_of(tiny_ae_run)
    del contents[CONFIG_KEY]
    path = tmp_path / "no-config.ckpt"
    torch.save(contents, path)
    return path


@pytest.mark.parametrize(
    "flag, extra",
    [
        ("--resume", []),
        # Naming the model and data does not make up for the missing configuration.
        ("--resume", ["--model", "ae", "--data", "digits", "--max-steps", "5"]),
        ("--evaluate", []),
    ],
)
def test_a_checkpoint_without_its_configuration_is_refused_before_anything_is_written(
    flag, extra, checkpoint_without_config, tmp_path, capsys
):
    output = tmp_path / "run"
    assert main([flag, str(checkpoint_without_config), *extra, "--output", str(output)]) == 2
    one_line(capsys, flag, "configuration")
    assert not output.exists(), "a refused checkpoint must not leave a run folder behind"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize("flag", ["--resume", "--evaluate"])
def test_a_named_pipe_given_as_a_checkpoint_is_refused_without_waiting_on_it(flag, tmp_path, capsys):
    pipe = tmp_path / "pipe.ckpt"
    os.mkfifo(pipe)
    assert main([flag, str(pipe), "--output", str(tmp_path / "run")]) == 2
    one_line(capsys, f"{flag}: no checkpoint file at {pipe}")


def _training_rows(run_dir: Path) -> list[int]:
    with (run_dir / "metrics.csv").open(newline="") as file:
        return [int(row["step"]) for row in csv.DictReader(file) if row.get("train/loss")]


def test_a_resume_in_place_from_a_checkpoint_older_than_last_ckpt_is_refused(tiny_ae_run, tmp_path, capsys):
    """Continuing from best.ckpt (or any older file) in the run's own folder would replace its later
    last.ckpt, rows and summary.json: refused, naming a folder of its own or --resume last."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_ae_run, run_dir)
    older = run_dir / "checkpoints" / "older.ckpt"
    shutil.copyfile(last_checkpoint(run_dir), older)
    assert main(["--resume", "last", "--output", str(run_dir), "--max-steps", "5"]) == 0
    kept = last_checkpoint(run_dir).read_bytes(), (run_dir / "summary.json").read_bytes()
    capsys.readouterr()
    assert main(["--resume", str(older), "--max-steps", "4"]) == 2
    one_line(capsys, f"--resume {older}: the run in", "went on to iteration 5", "--output NEW")
    assert (last_checkpoint(run_dir).read_bytes(), (run_dir / "summary.json").read_bytes()) == kept
    elsewhere = tmp_path / "elsewhere"
    assert main(["--resume", str(older), "--max-steps", "4", "--output", str(elsewhere)]) == 0


def test_a_checkpoint_outside_a_run_folder_resumes_into_a_new_run_folder(tiny_ae_run, tmp_path, monkeypatch):
    """The folder a checkpoint kept elsewhere lies in is someone's: the continued run gets a folder of its
    own under runs/, as a new run does."""
    kept = tmp_path / "kept" / "model.ckpt"
    kept.parent.mkdir()
    shutil.copyfile(last_checkpoint(tiny_ae_run), kept)
    monkeypatch.chdir(tmp_path)
    assert main(["--resume", str(kept), "--max-steps", "4"]) == 0
    assert [path.name for path in kept.parent.iterdir()] == ["model.ckpt"]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 4


def test_resume_labels_training_rows_with_their_iteration(tiny_ae_run, tmp_path):
    # The tiny run ends at iteration 3, which is also an evaluation step: the case where Lightning's
    # logging counter came back one ahead and labelled every resumed row one iteration late.
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_ae_run, run_dir)
    before = _training_rows(run_dir)
    assert before == [2], "rows every 3 iterations, at the 0-based index of the iteration's batch"
    assert main(["--output", str(run_dir), "--resume", "last", "--max-steps", "5"]) == 0
    # Iterations 4 and 5 are batches 3 and 4: no periodic row (every 3), then the final batch's row, once.
    assert _training_rows(run_dir) == [2, 4]


def test_a_resumed_runs_wall_time_counts_its_earlier_sessions(tiny_ae_run, tmp_path):
    """summary.json's wall_time_s is the run's, not its last session's: the checkpoint carries the time
    spent up to it, and the resumed session adds its own."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_ae_run, run_dir)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    contents = torch.load(checkpoint, map_location="cpu", weights_only=True)
    first_session = contents[WALL_TIME_KEY]
    assert 0 < first_session <= json.loads((run_dir / "summary.json").read_text())["wall_time_s"]
    contents[WALL_TIME_KEY] = 5000.0  # as if the first session took longer
    torch.save(contents, checkpoint)
    assert main(["--output", str(run_dir), "--resume", "last", "--max-steps", "5"]) == 0
    resumed = json.loads((run_dir / "summary.json").read_text())["wall_time_s"]
    assert 5000 < resumed < 5000 + 600
    # Carried through the checkpoint hooks, not a callback state: the clock joins its neighbours' group.
    from lightning_genae.callbacks.grouping import groupable
    from lightning_genae.experiment.train import RunWallClock

    assert groupable(RunWallClock())

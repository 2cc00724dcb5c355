"""`--overwrite` removes what a run wrote and nothing else."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from forked import run_forked
from tiny import TINY_RUN

from lightning_genae.errors import RunFolderRefused
from lightning_genae.experiment.cli import main
from lightning_genae.experiment.overwrite import Removal, SetAside
from lightning_genae.experiment.run_folder import ClaimedRunFolder
from lightning_genae.experiment.run_lock import LOCK_FILE

TINY_AE = ["--model", "ae", *TINY_RUN]
# A mistake found only once the run folder is taken: more training images than digits has.
TOO_MANY_IMAGES = [*TINY_AE, "--max-steps", "2", "--train-size", "5000"]


def remove_run_entries(run: Path) -> Removal:
    """What --overwrite does to `run` once the new run trains: its run's files set aside, then removed."""
    set_aside = SetAside.take(run)
    assert set_aside.remove() is None
    return set_aside.removal


@pytest.fixture()
def finished_run(tiny_ae_run: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_ae_run, run_dir)
    return run_dir


def test_overwrite_keeps_a_users_files_inside_the_runs_folders(finished_run, capsys):
    (finished_run / "images" / "holiday.jpg").write_bytes(b"holiday")
    (finished_run / "checkpoints" / "my_model.pt").write_bytes(b"weights")
    (finished_run / "wandb").mkdir()
    (finished_run / "wandb" / "notes.md").write_text("mine")
    (finished_run / "notes.txt").write_text("mine")
    old_images = {path.name for path in (finished_run / "images").glob("*.png")}
    assert old_images
    args = [*TINY_AE, "--max-steps", "2", "--eval-every", "2", "--output", str(finished_run), "--overwrite"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (finished_run / "images" / "holiday.jpg").read_bytes() == b"holiday"
    assert (finished_run / "checkpoints" / "my_model.pt").read_bytes() == b"weights"
    assert (finished_run / "wandb" / "notes.md").read_text() == "mine"
    assert "kept" in out and "images/holiday.jpg" in out and "checkpoints/my_model.pt" in out
    assert "notes.txt" in out and (finished_run / "notes.txt").read_text() == "mine"
    new_images = {path.name for path in (finished_run / "images").glob("*.png")}
    assert new_images and old_images.isdisjoint(new_images), "the previous run's step-3 images are gone"


def test_remove_run_entries_takes_only_the_names_a_run_writes(tmp_path):
    run = tmp_path / "run"
    written = [
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "checkpoints/last.ckpt",
        "checkpoints/best-v1.ckpt",
        # What a write killed part-way leaves beside the checkpoint it was replacing.
        "checkpoints/.last.ckpt.k3x_9q2a.tmp",
        "images/samples_step0000003.png",
        "tensorboard/events.out.tfevents.1700000000.host.1.0",
        "tensorboard/hparams.yaml",
        "wandb/run_id",
        "wandb/offline-run-20260101_120000-abc123/files/config.yaml",
    ]
    users = [
        "notes.txt",
        "checkpoints/my_model.ckpt",
        "checkpoints/.my_model.ckpt.tmp",
        "images/holiday.jpg",
        "tensorboard/readme.txt",
    ]
    for name in written + users:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("abc123" if name == "wandb/run_id" else "x")
    removal = remove_run_entries(run)
    left = sorted(str(path.relative_to(run)) for path in run.rglob("*") if path.is_file())
    assert left == sorted(users)
    assert not (run / "wandb").exists(), "a folder left empty goes too"
    assert sorted(removal.kept) == sorted(users), "a user's file beside the run's is named as kept too"


def test_remove_run_entries_keeps_a_users_folder_named_like_a_runs_file(tmp_path):
    # A run writes files in images/ and checkpoints/: a folder of those names is someone else's.
    run = tmp_path / "run"
    written = ["config.yaml", "images/samples_step0000003.png", "checkpoints/last.ckpt"]
    users = ["images/samples_step0000100.png/photo.jpg", "checkpoints/best.ckpt/notes.txt"]
    for name in written + users:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    remove_run_entries(run)
    left = sorted(str(path.relative_to(run)) for path in run.rglob("*") if path.is_file())
    assert left == sorted(users)


def test_a_foreign_checkpoints_pickle_is_read_a_chunk_at_a_time(tmp_path, monkeypatch):
    # Whether a last.ckpt is a run's is read from its pickle without holding the whole member in memory.
    import zipfile

    from lightning_genae.experiment import run_folder
    from lightning_genae.run_files import CONFIG_KEY

    checkpoint = tmp_path / "last.ckpt"
    with zipfile.ZipFile(checkpoint, "w") as archive:
        archive.writestr("archive/data.pkl", b"x" * 3000 + CONFIG_KEY.encode() + b"y" * 3000)
    read_sizes = []
    real_open = zipfile.ZipFile.open

    def recording_open(self, name, *args, **kwargs):
        member = real_open(self, name, *args, **kwargs)
        read = member.read
        member.read = lambda size=-1: read_sizes.append(size) or read(size)
        return member

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    archive = zipfile.ZipFile(checkpoint)
    assert run_folder._member_holds(archive, "archive/data.pkl", CONFIG_KEY.encode(), 1000)
    assert read_sizes and all(0 < size <= 1000 for size in read_sizes)
    assert not run_folder._member_holds(archive, "archive/data.pkl", b"absent", 1000)


@pytest.mark.parametrize("kept_id", [None, "abc123"], ids=["a run without W&B", "a run of another W&B id"])
def test_remove_run_entries_keeps_wandb_runs_of_another_id(kept_id, tmp_path):
    # W&B writes into ./wandb by default: a user's wandb.init there leaves runs that are not this run's.
    run = tmp_path / "run"
    others = ["wandb/run-20240101_000000-zz99/files/config.yaml", "wandb/latest-run", "wandb/debug.log"]
    for name in ["config.yaml", *others]:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    if kept_id is not None:
        (run / "wandb" / "run_id").write_text(kept_id)
        (run / "wandb" / f"offline-run-20260101_120000-{kept_id}").mkdir()
    removal = remove_run_entries(run)
    assert not (run / "config.yaml").exists()
    assert (run / others[0]).read_text() == "x", "another W&B run's folder is not the run's"
    assert "wandb/run-20240101_000000-zz99" in removal.kept
    if kept_id is None:
        assert (run / "wandb" / "latest-run").exists() and (run / "wandb" / "debug.log").exists()
    else:
        assert not (run / "wandb" / "run_id").exists()
        assert not (run / "wandb" / f"offline-run-20260101_120000-{kept_id}").exists()


@pytest.mark.parametrize("damaged", ["idA\nidB", "not an id!"], ids=["two lines", "not an id"])
def test_remove_run_entries_takes_no_wandb_folder_for_the_runs_by_a_damaged_id(damaged, tmp_path):
    run = tmp_path / "run"
    for name in ["config.yaml", "wandb/debug.log", "wandb/latest-run", "wandb/run-20240101_000000-idA/x"]:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    (run / "wandb" / "run_id").write_text(damaged)
    remove_run_entries(run)
    left = sorted(str(path.relative_to(run)) for path in run.rglob("*") if path.is_file())
    assert left == ["wandb/debug.log", "wandb/latest-run", "wandb/run-20240101_000000-idA/x"]


@pytest.mark.parametrize("names", [["normaliser.json", "eval.json"], ["images/samples_step0000002.png"]])
def test_a_folder_without_a_run_but_with_files_of_a_runs_names_is_refused_before_any_write(
    tmp_path, capsys, names
):
    # A run would overwrite them, and then `--overwrite` would remove them as that run's.
    folder = tmp_path / "mine"
    for name in [*names, "notes.txt"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"my {name}")
    before = sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))
    for extra in ([], ["--overwrite"]):
        args = [*TINY_AE, "--max-steps", "2", "--eval-every", "2", "--output", str(folder), *extra]
        assert main(args) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"error: --output {folder} holds {', '.join(names)}, named as a run's files")
        assert error.endswith("move them away or pick another --output") and "\n" not in error
    assert sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) == before
    assert all((folder / name).read_text() == f"my {name}" for name in names)


@pytest.mark.parametrize("left", [["failed.json"], ["wandb/run_id"]])
def test_what_a_run_or_grid_writes_before_config_yaml_does_not_block_the_folder(tmp_path, left):
    # A grid cell that failed before training keeps its failed.json; a run killed before its config.yaml
    # leaves the W&B run id it had chosen. Running again there is how either is continued.
    folder = tmp_path / "cell"
    for name in left:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    args = [*TINY_AE, "--max-steps", "2", "--eval-every", "2", "--output", str(folder)]
    assert main([*args, "--overwrite"]) == 0


def test_a_users_own_wandb_runs_in_a_folder_without_a_run_are_refused_not_adopted(tmp_path, capsys):
    # W&B writes into ./wandb by default: runs of another program there are not this folder's run's, and
    # --overwrite would remove them with it.
    folder = tmp_path / "project"
    (folder / "wandb" / "run-20240101_000000-abcd1234" / "files").mkdir(parents=True)
    args = [*TINY_AE, "--max-steps", "2", "--eval-every", "2", "--output", str(folder)]
    assert main(args) == 2
    assert "wandb/run-20240101_000000-abcd1234, named as a run's files" in capsys.readouterr().err
    assert (folder / "wandb" / "run-20240101_000000-abcd1234" / "files").is_dir()


def test_overwrite_refuses_a_runs_folder_that_links_to_another_runs_checkpoints(
    finished_run, tiny_ae_run, tmp_path, capsys
):
    """--overwrite removes what lies in the run's own folder; through a link the new run would replace the
    other run's best.ckpt and last.ckpt."""
    other = tmp_path / "other"
    shutil.copytree(tiny_ae_run, other)
    before = {p.name: p.read_bytes() for p in (other / "checkpoints").iterdir()}
    shutil.rmtree(finished_run / "checkpoints")
    (finished_run / "checkpoints").symlink_to(other / "checkpoints")
    args = [*TINY_AE, "--max-steps", "2", "--output", str(finished_run), "--overwrite", "--seed", "3"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "is a link to" in err and "remove the link" in err and "\n" not in err
    assert {p.name: p.read_bytes() for p in (other / "checkpoints").iterdir()} == before
    assert (finished_run / "config.yaml").is_file()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        # Each found only after the folder is claimed: by the data, by the augmenter's checkpoint.
        (["--train-size", "5000"], "--train-size 5000 exceeds the"),
        (
            ["--model", "gan", "--augment", "vae", "--augment-ckpt", "{run}/checkpoints/last.ckpt"],
            "--model vae",
        ),
    ],
    ids=["data", "augmenter"],
)
def test_overwrite_stopped_by_a_mistake_before_training_keeps_the_run_it_would_replace(
    finished_run, tmp_path, capsys, mistake, message
):
    (finished_run / "notes.txt").write_text("mine")
    other = tmp_path / "other"
    shutil.copytree(finished_run, other)
    before = _files(finished_run)
    mistake = [arg.replace("{run}", str(other)) for arg in mistake]
    args = [*TINY_AE, "--max-steps", "2", "--output", str(finished_run), "--overwrite", *mistake]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "removed the previous run" not in captured.out
    assert _files(finished_run) == before, "every file of the run back, byte for byte"
    assert not (finished_run / ".genae-replaced").exists()


KILLED_BEFORE_TRAINING = """
import os, signal, sys
import lightning_genae.experiment.train as train
from lightning_genae.experiment.cli import main

def killed(*args, **kwargs):
    # The folder is claimed, the replaced run set aside, config.yaml written: `kill -9` (or SLURM's SIGKILL).
    os.kill(os.getpid(), signal.SIGKILL)

train._fit = killed
sys.exit(main(sys.argv[1:]))
"""


def _killed_overwrite(run_dir: Path) -> None:
    args = [*TINY_AE, "--max-steps", "2", "--output", str(run_dir), "--overwrite"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    repo = Path(__file__).resolve().parents[2]
    killed = run_forked(KILLED_BEFORE_TRAINING, args, env=env, cwd=repo)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (run_dir / ".genae-replaced").is_dir()


def test_a_run_whose_overwrite_was_killed_before_training_is_put_back_by_the_next_start(finished_run, capsys):
    before = _files(finished_run)
    _killed_overwrite(finished_run)
    # Another --overwrite that stops before training: the run comes back, not the killed attempt's files.
    assert main([*TOO_MANY_IMAGES, "--output", str(finished_run), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "put back the run that an --overwrite, stopped before it trained, had set aside" in err
    assert _files(finished_run) == before
    # And once more killed, then continued: the run resumes as it was.
    _killed_overwrite(finished_run)
    assert main(["--resume", "last", "--output", str(finished_run), "--max-steps", "4"]) == 0
    assert "put back the run" in capsys.readouterr().err
    assert json.loads((finished_run / "summary.json").read_text())["global_step"] == 4
    assert not (finished_run / ".genae-replaced").exists()


def test_a_set_aside_run_that_cannot_be_removed_once_training_starts_is_named_and_training_goes_on(
    finished_run, capsys, monkeypatch
):
    from lightning_genae.experiment import overwrite

    real_remove = overwrite.remove_entry

    def remove(entry: Path) -> None:
        if entry.name == ".genae-replaced-removed":
            raise OSError(16, "Device or resource busy")
        real_remove(entry)

    monkeypatch.setattr(overwrite, "remove_entry", remove)
    args = [*TINY_AE, "--max-steps", "2", "--eval-every", "2", "--output", str(finished_run), "--overwrite"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "--overwrite: could not remove" in captured.err and "(OSError" in captured.err
    assert "removed the previous run's" not in captured.out
    assert json.loads((finished_run / "summary.json").read_text())["global_step"] == 2
    # What was left is never taken for a run to put back: the next start removes it, the new run stays.
    monkeypatch.setattr(overwrite, "remove_entry", real_remove)
    assert main(["--resume", "last", "--output", str(finished_run), "--max-steps", "3"]) == 0
    assert not (finished_run / ".genae-replaced-removed").exists()
    assert json.loads((finished_run / "summary.json").read_text())["global_step"] == 3


def test_a_run_killed_while_its_overwrite_moved_files_aside_gets_every_file_back_in_place(finished_run):
    """Killed part-way through the renames: what was moved comes back, what was not is left as it is (it is
    the replaced run's too)."""
    before = _files(finished_run)
    moving = finished_run / ".genae-replaced"
    for name in ("config.yaml", "metrics.csv", "checkpoints/best.ckpt"):
        (moving / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(finished_run / name, moving / name)
    assert main(["--resume", "last", "--output", str(finished_run), "--max-steps", "4"]) == 0
    assert not moving.exists()
    after = _files(finished_run)
    assert after["checkpoints/best.ckpt"] and set(before) <= set(after)


def test_a_grid_finds_the_cell_an_overwrite_was_killed_in_as_it_was(tmp_path, capsys):
    root = tmp_path / "grid"
    grid = [*TINY_AE, "--max-steps", "2", "--seeds", "0", "--output", str(root)]
    assert main(grid) == 0
    cell = root / "none-tsfull-seed0"
    before = _files(cell)
    _killed_overwrite(cell)
    capsys.readouterr()
    assert main(grid) == 0
    captured = capsys.readouterr()
    assert "put back the run" in captured.err and "finished (step 2), skipped" in captured.out
    assert _files(cell) == before


TERMINATED_BEFORE_TRAINING = """
import os, signal, sys
import lightning_genae.experiment.train as train
from lightning_genae.experiment.cli import main

fit = train._fit

def terminated(*args, **kwargs):
    # SLURM's preemption (or Ctrl-C) while the run sets up, after the replaced run was set aside.
    os.kill(os.getpid(), signal.SIGTERM)
    return fit(*args, **kwargs)

train._fit = terminated
sys.exit(main(sys.argv[1:]))
"""


def test_a_stop_signal_before_training_puts_the_replaced_run_back_whole(finished_run):
    (finished_run / "checkpoints" / "my.ckpt").write_bytes(b"mine")
    before = _files(finished_run)
    args = [*TINY_AE, "--max-steps", "2", "--seed", "1", "--output", str(finished_run), "--overwrite"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stopped = run_forked(TERMINATED_BEFORE_TRAINING, args, env=env, cwd=Path(__file__).resolve().parents[2])
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert _files(finished_run) == before


def test_a_users_checkpoint_of_any_time_does_not_pass_for_the_new_runs(finished_run):
    user = finished_run / "checkpoints" / "my.ckpt"
    user.write_bytes(b"mine")
    os.utime(user, (2**33, 2**33))  # far in the future: a clock skew, or a file written during set-up
    before = _files(finished_run)
    assert main([*TOO_MANY_IMAGES, "--output", str(finished_run), "--overwrite"]) == 2
    assert _files(finished_run) == before


def test_a_grid_cell_whose_restart_fails_before_training_keeps_its_finished_run_unmarked(
    tmp_path, capsys, monkeypatch
):
    import lightning_genae.experiment.train as train

    root = tmp_path / "grid"
    grid = [*TINY_AE, "--max-steps", "2", "--seeds", "0", "--output", str(root)]
    assert main(grid) == 0
    cell = root / "none-tsfull-seed0"
    before = _files(cell)

    def fails(*args, **kwargs):
        raise RuntimeError("stopped before training by the test")

    monkeypatch.setattr(train, "_fit", fails)
    assert main([*grid, "--overwrite"]) == 1
    assert "the cell's finished run is kept" in capsys.readouterr().err
    assert _files(cell) == before and not (cell / "failed.json").exists()
    monkeypatch.undo()
    assert main(grid) == 0 and "finished (step 2), skipped" in capsys.readouterr().out


def test_no_run_starts_in_a_folder_while_its_checkpoint_is_evaluated_there(finished_run, monkeypatch):
    """`--evaluate D/checkpoints/last.ckpt` scores the run it loaded; an `--overwrite` of D starting while it
    computes would leave those numbers in an eval.json beside the new run: it is refused until then."""
    from lightning_genae.experiment import evaluate

    scored = evaluate.final_evaluation

    def overwritten_meanwhile(*args, **kwargs):
        with pytest.raises(RunFolderRefused, match="in use by another run"):
            ClaimedRunFolder.claim(finished_run, resuming_from=None, overwrite=True)
        return scored(*args, **kwargs)

    monkeypatch.setattr(evaluate, "final_evaluation", overwritten_meanwhile)
    assert main(["--evaluate", str(finished_run / "checkpoints" / "last.ckpt")]) == 0
    assert (finished_run / "eval.json").is_file() and not (finished_run / LOCK_FILE).exists()

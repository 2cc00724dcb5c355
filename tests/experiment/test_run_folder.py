"""A run folder belongs to one run: a foreign folder refused, --overwrite, the lock, undoing a failed start,
bad --output paths, and what --resume may and may not change."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

import pytest
import torch
from forked import Forked
from refusals import one_line
from tiny import TINY_RUN

from lightning_genae.errors import ConfigError, RunFolderRefused
from lightning_genae.experiment.cli import main
from lightning_genae.experiment.config import CHANGEABLE_ON_RESUME, flag
from lightning_genae.experiment.run_folder import ClaimedRunFolder
from lightning_genae.experiment.run_lock import LOCK_FILE, RunFolderLock
from lightning_genae.experiment.trainer import default_threads
from lightning_genae.run_files import CONFIG_HEADER, PER_INVOCATION

REPO = Path(__file__).resolve().parents[2]
TINY_AE = ["--model", "ae", *TINY_RUN]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: "nothing touched" is an equal snapshot."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.fixture()
def finished_run(tiny_ae_run: Path, tmp_path: Path) -> Path:
    """A writable copy of the session's finished 3-iteration ae run."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_ae_run, run_dir)
    return run_dir


# --- ownership


def test_a_second_run_into_a_finished_run_is_refused_and_touches_nothing(finished_run, capsys):
    before = snapshot(finished_run)
    assert main([*TINY_AE, "--max-steps", "2", "--output", str(finished_run)]) == 2
    one_line(
        capsys,
        "already holds a finished run",
        f"--resume last --output {finished_run}",
        "--overwrite",
        "another --output",
    )
    assert snapshot(finished_run) == before
    assert not (finished_run / LOCK_FILE).exists()


def test_a_started_run_without_checkpoint_is_refused_without_advising_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(f"{CONFIG_HEADER}; re-run with: ...\nmodel: ae\n")
    assert main([*TINY_AE, "--max-steps", "2", "--output", str(run_dir)]) == 2
    err = one_line(capsys, "already holds a started run (config.yaml)", "--overwrite")
    assert "--resume" not in err, "there is no last.ckpt to resume from"


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_a_users_files_named_as_a_runs_are_refused_and_never_removed(overwrite, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("model: ae\n")
    (folder / "metrics.csv").write_text("step\n")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert main([*TINY_AE, "--max-steps", "2", *overwrite, "--output", str(folder)]) == 2
    err = one_line(capsys, "holds config.yaml, metrics.csv, named as a run's files", "which no run wrote")
    assert "started run" not in err
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    # A grid's --output is refused alike.
    assert main([*TINY_AE, "--max-steps", "2", *overwrite, "--seeds", "0,1", "--output", str(folder)]) == 2
    one_line(capsys, "which no run wrote")
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


@pytest.mark.parametrize("checkpoint", ["epoch=0-step=10.ckpt", "last.ckpt"])
def test_another_lightning_programs_folder_is_refused_and_never_removed(checkpoint, tmp_path, capsys):
    folder = tmp_path / "lightning_logs"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "metrics.csv").write_text("epoch,step,loss\n0,9,0.5\n")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": 10}, folder / "checkpoints" / checkpoint)
    before = snapshot(folder)
    assert main([*TINY_AE, "--max-steps", "2", "--overwrite", "--output", str(folder)]) == 2
    one_line(capsys, "which no run wrote", "pick another --output")
    assert snapshot(folder) == before


def test_a_copy_of_a_runs_config_yaml_elsewhere_is_the_users_and_never_removed(
    finished_run, tmp_path, capsys
):
    mine = tmp_path / "mine"
    mine.mkdir()
    edited = (finished_run / "config.yaml").read_text() + "# my notes\n"
    (mine / "config.yaml").write_text(edited)
    assert main([*TINY_AE, "--max-steps", "2", "--overwrite", "--output", str(mine)]) == 2
    one_line(capsys, "which no run wrote")
    assert (mine / "config.yaml").read_text() == edited


def test_a_run_moved_with_its_name_before_its_first_checkpoint_is_still_a_run(tmp_path, capsys):
    run_dir = tmp_path / "grid" / "cell"
    assert main([*TINY_AE, "--max-steps", "1", "--output", str(run_dir)]) == 0
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "summary.json").unlink()
    (tmp_path / "grid").rename(tmp_path / "moved")
    moved = tmp_path / "moved" / "cell"
    capsys.readouterr()
    assert main([*TINY_AE, "--max-steps", "2", "--output", str(moved)]) == 2
    one_line(capsys, "already holds a started run")
    assert main([*TINY_AE, "--max-steps", "2", "--overwrite", "--output", str(moved)]) == 0


@pytest.mark.parametrize(
    "first_write",
    [
        # The metrics logger's first write (at iteration 100), and again at the logger's finalize.
        ["--ckpt-every", "500", "--image-every", "500", "--max-steps", "150"],
        # A periodic checkpoint, or a picture, before the logger writes: neither may make the folder again.
        ["--ckpt-every", "3", "--image-every", "500", "--max-steps", "20"],
        ["--ckpt-every", "500", "--image-every", "3", "--max-steps", "20"],
    ],
    ids=["metrics", "checkpoint", "picture"],
)
def test_a_run_whose_folder_is_moved_while_it_trains_stops_with_one_line(
    tmp_path, capsys, monkeypatch, first_write
):
    """Renamed under a running run: whatever writes there next says so once, and nothing makes the folder
    again."""
    from pytorch_lightning import Callback

    import lightning_genae.experiment.train as train

    run_dir, moved = tmp_path / "live", tmp_path / "renamed"

    class MoveTheFolder(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            if pl_module.iteration == 2 and run_dir.is_dir():
                run_dir.rename(moved)

    build = train.build_callbacks
    monkeypatch.setattr(train, "build_callbacks", lambda *args: [*build(*args), MoveTheFolder()])
    assert main([*TINY_AE, *first_write, "--eval-every", "500", "--output", str(run_dir)]) == 1
    one_line(capsys, f"the run folder {run_dir} is gone; put it back")
    assert not run_dir.exists()
    assert moved.is_dir() and (moved / "config.yaml").is_file()


def test_a_run_whose_folder_is_moved_before_its_final_evaluation_stops_with_one_line(
    tmp_path, capsys, monkeypatch
):
    """The final evaluation validates and tests on the training's Trainer; its set-up made the folder again,
    and the metrics rows and summary.json went there without config.yaml."""
    import lightning_genae.experiment.train as train

    run_dir, moved = tmp_path / "live", tmp_path / "renamed"
    evaluate = train.final_evaluation

    def moved_first(*args, **kwargs):
        run_dir.rename(moved)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "final_evaluation", moved_first)
    assert main([*TINY_AE, "--max-steps", "3", "--eval-every", "3", "--output", str(run_dir)]) == 1
    one_line(capsys, f"the run folder {run_dir} is gone; put it back")
    assert not run_dir.exists() and (moved / "checkpoints" / "last.ckpt").is_file()


def test_a_moved_run_folder_is_still_a_run_and_resumes(finished_run, tmp_path):
    moved = tmp_path / "moved"
    finished_run.rename(moved)
    assert main(["--resume", "last", "--output", str(moved), "--max-steps", "4"]) == 0
    assert json.loads((moved / "summary.json").read_text())["global_step"] == 4


def test_overwrite_replaces_the_previous_run_and_keeps_other_files(finished_run, capsys):
    (finished_run / "notes.txt").write_text("mine")
    old_images = {path.name for path in (finished_run / "images").iterdir()}
    assert (
        main(
            [*TINY_AE, "--max-steps", "2", "--eval-every", "2", "--output", str(finished_run), "--overwrite"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "--overwrite: removed the previous run's config.yaml, metrics.csv, summary.json, checkpoints/" in out
    )
    assert json.loads((finished_run / "summary.json").read_text())["global_step"] == 2
    steps = {line.split(",")[1] for line in (finished_run / "metrics.csv").read_text().splitlines()[1:]}
    assert "3" not in steps and "2" in steps, "no row of the first run's iteration 3 is left"
    assert sorted(path.name for path in (finished_run / "checkpoints").iterdir()) == [
        "best.ckpt",
        "last.ckpt",
    ]
    assert torch.load(finished_run / "checkpoints" / "best.ckpt", weights_only=True)["global_step"] == 2
    new_images = {path.name for path in (finished_run / "images").iterdir()}
    assert new_images and old_images.isdisjoint(new_images), "the first run's step-3 images are gone"
    assert (finished_run / "notes.txt").read_text() == "mine"


def test_overwrite_and_resume_together_are_refused(finished_run, capsys):
    before = snapshot(finished_run)
    assert main(["--resume", "last", "--output", str(finished_run), "--overwrite"]) == 2
    one_line(capsys, "--overwrite", "--resume", "give one of them")
    assert snapshot(finished_run) == before


def test_resuming_into_a_folder_of_another_run_is_refused(finished_run, tiny_ae_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny_ae_run, other)
    before = snapshot(other)
    assert main(["--resume", str(finished_run / "checkpoints/last.ckpt"), "--output", str(other)]) == 2
    one_line(capsys, "holds another run")
    assert snapshot(other) == before


# --- bad --output paths


@pytest.mark.parametrize("mode", ["run", "grid", "evaluate"])
@pytest.mark.parametrize("where", ["is a file", "under a file"])
def test_output_that_is_or_lies_under_a_file_is_one_line_exit_2(where, mode, tiny_ae_run, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    output = blocker if where == "is a file" else blocker / "run"
    command = {
        "run": [*TINY_AE, "--max-steps", "2"],
        "grid": [*TINY_AE, "--max-steps", "2", "--seeds", "0,1"],
        "evaluate": ["--evaluate", str(tiny_ae_run / "checkpoints" / "last.ckpt")],
    }[mode]
    assert main([*command, "--output", str(output)]) == 2
    one_line(capsys, str(blocker), "not a writable folder")
    assert blocker.read_text() == "a file"


@pytest.mark.skipif(
    not Path("/proc/self").is_dir(), reason="needs Linux /proc, where nobody may make a folder"
)
def test_output_that_cannot_be_written_is_one_line_exit_2(capsys):
    # /proc refuses new folders to every user, root included (a chmod'ed folder would not stop root).
    assert main([*TINY_AE, "--max-steps", "2", "--output", "/proc/genae-run"]) == 2
    one_line(capsys, "/proc/genae-run")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_in_a_read_only_folder_is_one_line_exit_2(tmp_path, capsys):
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main([*TINY_AE, "--max-steps", "2", "--output", str(locked / "run")]) == 2
        one_line(capsys, str(locked), "not a writable folder")
    finally:
        locked.chmod(0o700)
    assert not (locked / "run").exists()


# --- a failed start leaves no half-made folder


def resume_failing_at_trainer_setup(run_dir: Path) -> list[str]:
    """A resume that fails after the folder was claimed: its Trainer cannot be built."""
    return [
        "--resume",
        "last",
        "--output",
        str(run_dir),
        "--max-steps",
        "5",
        "--strategy",
        "no-such-strategy",
    ]


@pytest.mark.parametrize(
    "flags, message",
    [(["--batch-size", "5000"], "--batch-size"), (["--train-size", "3"], "--batch-size")],
    ids=["batch larger than the split", "train size below one batch"],
)
def test_an_error_at_training_start_leaves_no_run_folder(flags, message, tmp_path, capsys):
    output = tmp_path / "nested" / "run"
    assert main([*TINY_AE, "--max-steps", "2", *flags, "--output", str(output)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "nested").exists(), "the folders this invocation made are removed again"


def test_an_interrupt_before_the_first_step_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    import lightning_genae.experiment.augmenter

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while, say, the augmenter trains

    monkeypatch.setattr(lightning_genae.experiment.augmenter, "attach_augmentation", interrupted)
    output = tmp_path / "run"
    assert main([*TINY_AE, "--max-steps", "2", "--output", str(output)]) == 130
    assert capsys.readouterr().err.endswith("stopped by Ctrl-C\n")
    assert not output.exists()


def test_a_failed_start_keeps_what_another_run_made_beside_it(tmp_path, monkeypatch):
    import lightning_genae.experiment.augmenter

    sibling = tmp_path / "grid" / "other-cell"

    def another_run_starts_then_this_one_fails(*args, **kwargs):
        sibling.mkdir()  # e.g. the next array task's cell, made in the parent this run created
        raise ConfigError("--augment: injected failure")

    monkeypatch.setattr(
        lightning_genae.experiment.augmenter, "attach_augmentation", another_run_starts_then_this_one_fails
    )
    assert main([*TINY_AE, "--max-steps", "2", "--output", str(tmp_path / "grid" / "cell")]) == 2
    assert not (tmp_path / "grid" / "cell").exists()
    assert sibling.is_dir(), "the parent this run made is removed only while empty"


@pytest.mark.parametrize("existing", [False, True], ids=["a folder the run made", "an existing folder"])
def test_a_failed_start_keeps_a_file_the_user_put_in_the_folder_while_it_set_up(
    existing, tmp_path, monkeypatch, capsys
):
    import lightning_genae.experiment.augmenter

    output = tmp_path / "run"
    if existing:
        output.mkdir()

    def the_user_adds_notes_then_the_start_fails(*args, **kwargs):
        (output / "notes.txt").write_text("mine")
        (output / "images").mkdir(exist_ok=True)
        (output / "images" / "holiday.jpg").write_bytes(b"holiday")
        raise ConfigError("--augment: injected failure")

    monkeypatch.setattr(
        lightning_genae.experiment.augmenter, "attach_augmentation", the_user_adds_notes_then_the_start_fails
    )
    assert main([*TINY_AE, "--max-steps", "2", "--output", str(output)]) == 2
    assert "injected failure" in capsys.readouterr().err
    assert snapshot(output) == {"notes.txt": b"mine", "images/holiday.jpg": b"holiday"}


def test_an_error_at_training_start_leaves_an_existing_folder_as_it_was(tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    assert main([*TINY_AE, "--max-steps", "2", "--batch-size", "5000", "--output", str(output)]) == 2
    assert snapshot(output) == {"notes.txt": b"mine"}
    # Nothing of the failed start counts as a run: the corrected command goes into the same folder.
    assert main([*TINY_AE, "--max-steps", "1", "--output", str(output)]) == 0


def test_a_resume_that_fails_before_training_leaves_the_run_as_it_was(finished_run, capsys):
    before = snapshot(finished_run)
    # A Trainer that cannot be built fails after the folder was claimed and config.yaml rewritten.
    assert main(resume_failing_at_trainer_setup(finished_run)) == 2
    assert "Trainer set-up failed" in capsys.readouterr().err
    assert snapshot(finished_run) == before


# --- the lock


HOLD_THE_LOCK = """
import sys, time
from pathlib import Path
from lightning_genae.experiment.run_lock import RunFolderLock
RunFolderLock.acquire(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture()
def holder():
    """Starts a process that takes a folder's lock (under the environment given) and keeps it till killed."""
    processes: list[Forked] = []

    def start(run_dir: Path, **env: str) -> Forked:
        run_dir.mkdir(parents=True, exist_ok=True)
        process = Forked(HOLD_THE_LOCK, [str(run_dir)], env={**os.environ, **env})
        processes.append(process)
        process.wait_until_printed("held\n")
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()


@pytest.fixture()
def held_lock():
    """Holds the lock of a folder in this process, as another run would (flock: each open file its own)."""
    locks: list[RunFolderLock] = []

    def hold(run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        locks.append(RunFolderLock.acquire(run_dir))

    yield hold
    for lock in locks:
        lock.release()


def test_a_folder_locked_by_a_live_run_is_refused_naming_its_owner(tmp_path, holder, capsys):
    output = tmp_path / "run"
    owner = holder(output, SLURM_JOB_ID="991", SLURM_ARRAY_TASK_ID="3")
    assert main([*TINY_AE, "--max-steps", "1", "--output", str(output)]) == 2
    one_line(
        capsys,
        "in use by another run",
        f"host {socket.gethostname()}, pid {owner.pid}, started ",
        "SLURM job 991 task 3",
    )
    assert sorted(os.listdir(output)) == [LOCK_FILE], "the owner's lock stays and nothing is written"


def test_evaluate_of_a_run_still_training_writes_no_eval_json_in_its_folder(finished_run, held_lock, capsys):
    """Its eval.json would describe an early checkpoint beside the final summary.json, and block --evaluate of
    the final weights without --overwrite."""
    held_lock(finished_run)
    checkpoint = finished_run / "checkpoints" / "last.ckpt"
    assert main(["--evaluate", str(checkpoint)]) == 2
    one_line(capsys, f"--output {finished_run} is in use by another run", "pick another --output")
    assert not (finished_run / "eval.json").exists()
    elsewhere = finished_run.parent / "evaluation"
    assert main(["--evaluate", str(checkpoint), "--output", str(elsewhere)]) == 0
    assert (elsewhere / "eval.json").is_file()


def test_overwrite_never_removes_a_run_that_is_still_writing(finished_run, held_lock):
    held_lock(finished_run)
    before = snapshot(finished_run)
    with pytest.raises(RunFolderRefused, match="in use by another run"):
        ClaimedRunFolder.claim(finished_run, resuming_from=None, overwrite=True)
    assert snapshot(finished_run) == before


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_notice(tmp_path, holder, capsys):
    output = tmp_path / "run"
    owner = holder(output)
    owner.kill()  # SIGKILL: no chance to release; the kernel lets go of its lock, its record stays
    owner.wait()
    assert (output / LOCK_FILE).is_file()
    assert main([*TINY_AE, "--max-steps", "1", "--output", str(output)]) == 0
    assert f"took over the lock of a run that is gone (host {socket.gethostname()}, pid {owner.pid}" in (
        capsys.readouterr().out
    )
    assert not (output / LOCK_FILE).exists(), "the lock is released when the run ends"


def test_a_lock_is_released_when_the_run_fails(finished_run, capsys):
    assert main(resume_failing_at_trainer_setup(finished_run)) == 2
    assert not (finished_run / LOCK_FILE).exists()


@pytest.mark.slow
def test_two_runs_started_at_once_into_one_folder_the_second_is_refused(tmp_path, capsys):
    output = tmp_path / "run"
    arguments = [*TINY_AE, "--max-steps", "100000", "--output", str(output)]
    first = Forked(REPO / "run.py", arguments, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while not (output / LOCK_FILE).exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert (output / LOCK_FILE).exists(), first.stderr if first.poll() is not None else "no lock"
        assert main([*TINY_AE, "--max-steps", "1", "--output", str(output)]) == 2
        one_line(capsys, "in use by another run", f"pid {first.pid}")
    finally:
        first.kill()
        first.wait()


# --- what a resume may change


def test_resume_refuses_options_that_define_another_run_naming_both_values(finished_run, capsys):
    before = snapshot(finished_run)
    code = main(["--resume", "last", "--output", str(finished_run), "--data", "mnist", "--latent-dim", "4"])
    assert code == 2
    one_line(
        capsys,
        "--data mnist (checkpoint: digits)",
        "--latent-dim 4 (checkpoint: 8)",
        "another --output",
        # Every option a resume may change is named, as the configuration declares them.
        *(f" {flag(name)}" for name in CHANGEABLE_ON_RESUME if name not in PER_INVOCATION),
    )
    assert snapshot(finished_run) == before


def test_resume_names_a_switch_as_it_was_typed():
    from lightning_genae.experiment.config import resume_conflicts

    stored = {"began_skip_connections": True, "spectral_norm": False, "seed": 0}
    given = {"began_skip_connections": False, "spectral_norm": True, "seed": 0}
    assert resume_conflicts(stored, given) == [
        "--no-began-skip-connections (checkpoint: --began-skip-connections)",
        "--spectral-norm (checkpoint: --no-spectral-norm)",
    ]


def test_resume_from_another_family_names_only_what_the_user_typed(finished_run, capsys):
    # The ae checkpoint carries ae-only options (--denoise, ...): asking for a gan must not blame them.
    assert main(["--resume", "last", "--output", str(finished_run), "--model", "gan"]) == 2
    err = one_line(capsys, "--model gan (checkpoint: ae)")
    assert "--denoise" not in err and "--recon-loss" not in err


def test_a_config_file_given_with_resume_is_compared_like_flags(finished_run, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text((finished_run / "config.yaml").read_text().replace("seed: 0", "seed: 3"))
    assert main(["--config", str(config), "--resume", "last", "--output", str(finished_run)]) == 2
    one_line(capsys, "--seed 3 (checkpoint: 0)")


def test_a_new_lr_on_resume_reaches_the_optimizer(finished_run, capsys):
    assert main(["--resume", "last", "--output", str(finished_run), "--max-steps", "5", "--lr", "0.02"]) == 0
    assert "--lr 0.02 replaces the checkpoint's 0.001 from here on" in capsys.readouterr().out
    resumed = torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 5
    assert [group["lr"] for group in resumed["optimizer_states"][0]["param_groups"]] == [0.02]
    assert resumed["genae_config"]["lr"] == 0.02


# (environment, the CPUs this process may use, processes the run starts on the node, the threads each gets)
THREAD_DEFAULTS = [
    ({"OMP_NUM_THREADS": "3", "SLURM_CPUS_PER_TASK": "5"}, {0, 1, 2, 3}, 2, 3),
    ({"SLURM_CPUS_PER_TASK": "5"}, {0, 1, 2, 3}, 1, 5),
    ({}, {0, 1, 2, 3}, 1, 4),
    ({}, {0, 1, 2, 3}, 2, 2),
    ({}, {6}, 2, 1),
]


@pytest.mark.parametrize(("environment", "cpus", "processes", "threads"), THREAD_DEFAULTS)
def test_threads_default_to_the_cores_this_process_may_use(
    environment, cpus, processes, threads, monkeypatch
):
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: cpus, raising=False)
    assert default_threads(processes) == threads


def test_threads_reach_torch_and_a_resume_may_change_them(tmp_path, capsys):
    output = tmp_path / "run"
    for threads, steps in ((2, 3), (1, 4)):
        resume = ["--resume", "last"] if steps > 3 else []
        args = [*TINY_AE, *resume, "--max-steps", str(steps), "--threads", str(threads)]
        assert main([*args, "--output", str(output)]) == 0
        assert torch.get_num_threads() == threads
        # Processes the run starts (DDP ranks, loader workers) take the same count.
        assert os.environ["OMP_NUM_THREADS"] == str(threads)
        assert f", {threads} CPU thread{'s' if threads > 1 else ''}\n" in capsys.readouterr().out
    assert json.loads((output / "summary.json").read_text())["global_step"] == 4
    # One invocation's setting: a re-run from config.yaml takes the default of the machine it runs on.
    assert "threads: null" in (output / "config.yaml").read_text()


def test_resuming_into_another_folder_says_so_without_lightnings_warning(finished_run, tmp_path, capsys):
    target = tmp_path / "continued"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(
            [
                "--resume",
                str(finished_run / "checkpoints" / "last.ckpt"),
                "--output",
                str(target),
                "--max-steps",
                "4",
            ]
        )
    assert code == 0
    assert not [w for w in caught if "dirpath" in str(w.message)], [str(w.message) for w in caught]
    captured = capsys.readouterr()
    assert f"continuing the run of {finished_run} in {target}" in captured.out
    assert "dirpath" not in captured.err
    assert json.loads((target / "summary.json").read_text())["global_step"] == 4

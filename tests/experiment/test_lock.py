"""The run folder's lock: whoever holds it is refused by name, a file no process holds is taken over, a
requeued SLURM job knows its earlier attempt's, and a start that could not take it leaves no folder behind."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from lightning_genae.errors import ConfigError, RunFolderRefused
from lightning_genae.experiment.run_folder import ClaimedRunFolder
from lightning_genae.experiment.run_lock import LOCK_FILE, RunFolderLock, live_lock_owner

pytestmark = pytest.mark.quick

REPO = Path(__file__).resolve().parents[2]

# Claims a new folder while every file write fails (as on a full disk): RLIMIT_FSIZE 0, SIGXFSZ ignored.
CLAIM_WITH_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from lightning_genae.experiment.run_folder import ClaimedRunFolder
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    ClaimedRunFolder.claim(Path(sys.argv[1]), resuming_from=None, overwrite=False)
except OSError as error:
    print(error)
"""


def test_a_lock_that_cannot_be_written_leaves_no_lock_and_no_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "new" / "run"
    result = subprocess.run(
        [sys.executable, "-c", CLAIM_WITH_FULL_DISK, str(run_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert "File too large" in result.stdout, result
    assert not (run_dir / LOCK_FILE).exists(), "no empty lock is left"
    assert not (tmp_path / "new").exists(), "the folders made for the run are gone"
    assert list(tmp_path.iterdir()) == []


def test_the_holder_is_named_while_it_holds_the_lock_and_the_file_goes_with_it(tmp_path: Path) -> None:
    assert live_lock_owner(tmp_path) is None
    assert not (tmp_path / LOCK_FILE).exists(), "asking never makes a lock file"
    lock = RunFolderLock.acquire(tmp_path)
    owner = live_lock_owner(tmp_path)
    assert owner is not None and f"pid {os.getpid()}" in owner
    # Another lock of the same file is another holder, in this process too (flock: one per open file).
    with pytest.raises(RunFolderRefused, match=f"pid {os.getpid()}") as refused:
        RunFolderLock.acquire(tmp_path)
    assert "\n" not in str(refused.value)
    with pytest.raises(RunFolderRefused, match="in use by another run"):
        RunFolderLock.refuse_if_held(tmp_path)
    lock.release()
    assert live_lock_owner(tmp_path) is None
    assert list(tmp_path.iterdir()) == []
    RunFolderLock.refuse_if_held(tmp_path)


def test_a_run_ending_leaves_the_lock_another_run_took_after_its_file_was_removed_by_hand(tmp_path) -> None:
    first = RunFolderLock.acquire(tmp_path)
    (tmp_path / LOCK_FILE).unlink()
    second = RunFolderLock.acquire(tmp_path)
    first.release()
    assert f"pid {os.getpid()}" in (live_lock_owner(tmp_path) or ""), "the second run keeps its lock"
    second.release()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "left",
    [
        json.dumps({"host": "gpu-node-17", "pid": 4242, "slurm_job_id": "991"}),  # a node that went away
        '{"host": "x", "pi',  # cut short
        "",
    ],
)
def test_a_lock_file_no_process_holds_is_taken_over_whatever_it_records(tmp_path, capsys, left) -> None:
    (tmp_path / LOCK_FILE).write_text(left)
    assert live_lock_owner(tmp_path) is None
    lock = RunFolderLock.acquire(tmp_path)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    out = capsys.readouterr().out
    assert ("took over the lock of a run that is gone" in out) == bool(left), out
    lock.release()
    assert list(tmp_path.iterdir()) == []


def test_a_held_lock_whose_record_cannot_be_read_is_still_refused(tmp_path: Path) -> None:
    with FileLock(tmp_path / LOCK_FILE):
        with pytest.raises(RunFolderRefused, match="its record cannot be read"):
            RunFolderLock.acquire(tmp_path)
        assert live_lock_owner(tmp_path) == "its record cannot be read"


def test_a_filesystem_without_flock_is_refused_naming_the_fix(tmp_path, monkeypatch) -> None:
    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="no file locks") as refused:
        ClaimedRunFolder.claim(run_dir, resuming_from=None, overwrite=False)
    assert "-o flock" in str(refused.value)
    assert list(tmp_path.iterdir()) == [], "no folder and no lock file are left"


@pytest.mark.parametrize(
    ("recorded", "ours", "earlier"),
    [
        ({"slurm_job_id": "991"}, {"SLURM_JOB_ID": "991", "SLURM_RESTART_COUNT": "1"}, True),
        (
            {"slurm_job_id": "991", "slurm_restart_count": 1},
            {"SLURM_JOB_ID": "991", "SLURM_RESTART_COUNT": "2"},
            True,
        ),
        # The same attempt: another run of the job's allocation.
        (
            {"slurm_job_id": "991", "slurm_restart_count": 2},
            {"SLURM_JOB_ID": "991", "SLURM_RESTART_COUNT": "2"},
            False,
        ),
        ({"slurm_job_id": "991"}, {"SLURM_JOB_ID": "991"}, False),
        # Another array task, another job, no job.
        (
            {"slurm_job_id": "991", "slurm_array_task_id": "4"},
            {"SLURM_JOB_ID": "991", "SLURM_ARRAY_TASK_ID": "3", "SLURM_RESTART_COUNT": "1"},
            False,
        ),
        ({"slurm_job_id": "992"}, {"SLURM_JOB_ID": "991", "SLURM_RESTART_COUNT": "1"}, False),
        ({"slurm_job_id": "991"}, {}, False),
    ],
)
def test_a_requeued_job_knows_only_its_own_earlier_attempts_lock(
    tmp_path, monkeypatch, recorded, ours, earlier
):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in ours.items():
        monkeypatch.setenv(name, value)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "gpu-node-17", "pid": 4242, **recorded}))
    assert RunFolderLock.left_by_this_jobs_earlier_attempt(tmp_path) is earlier


def test_a_lock_that_cannot_be_removed_does_not_hide_the_error_being_reported(tmp_path, monkeypatch):
    """A folder gone read-only stops the run with its own error; removing the lock then fails too, and that
    failure must not replace the first one."""
    lock = RunFolderLock.acquire(tmp_path)

    def read_only(self, missing_ok=False):
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(OSError, match="No space left"):
        try:
            raise OSError(28, "No space left on device")
        finally:
            lock.release()
    monkeypatch.undo()
    assert (tmp_path / LOCK_FILE).is_file()
    assert live_lock_owner(tmp_path) is None, "the lock itself is let go"

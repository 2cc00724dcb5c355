"""The run folder's lock is placed whole, an unreadable one is judged by its age, and a start that could not
take it leaves no folder behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_genae.errors import RunFolderRefused
from lightning_genae.experiment.run_folder import ClaimedRunFolder
from lightning_genae.experiment.run_lock import LOCK_FILE, UNREADABLE_LOCK_GRACE_S

REPO = Path(__file__).resolve().parents[1]

# Claims a new folder while every file write fails (as on a full disk): RLIMIT_FSIZE 0, SIGXFSZ ignored.
CLAIM_WITH_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from lightning_genae.errors import GenaeError
from lightning_genae.experiment.run_folder import ClaimedRunFolder
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    ClaimedRunFolder.claim(Path(sys.argv[1]), resuming_from=None, overwrite=False)
except GenaeError as error:
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
    assert "cannot be written" in result.stdout and "pick a writable --output" in result.stdout, result
    assert not (run_dir / LOCK_FILE).exists(), "no empty lock is left"
    assert not (tmp_path / "new").exists(), "the folders made for the run are gone"
    assert list(tmp_path.iterdir()) == []


def test_an_old_unreadable_lock_is_stale_and_taken_over_with_a_notice(tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = run_dir / LOCK_FILE
    lock.write_text("")
    old = time.time() - UNREADABLE_LOCK_GRACE_S - 60
    os.utime(lock, (old, old))
    claimed = ClaimedRunFolder.claim(run_dir, resuming_from=None, overwrite=False)
    try:
        assert lock.read_text().startswith("{"), "the lock is now this process's, whole"
        out = capsys.readouterr().out
        assert "took over the lock" in out and "could not be read" in out
    finally:
        claimed.release()
    assert not lock.exists()
    assert sorted(path.name for path in run_dir.iterdir()) == [], "no temporary or aside file is left"


def test_a_fresh_unreadable_lock_is_refused_saying_how_to_clear_it(tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_FILE).write_text('{"host": "x", "pi')
    started = time.monotonic()
    with pytest.raises(RunFolderRefused) as error:
        ClaimedRunFolder.claim(run_dir, resuming_from=None, overwrite=False)
    message = str(error.value)
    assert "\n" not in message and "cannot be read" in message
    assert f"remove {run_dir / LOCK_FILE} and run again" in message
    assert time.monotonic() - started < 5
    assert (run_dir / LOCK_FILE).read_text() == '{"host": "x", "pi', "a lock that may be in use is left alone"


def test_a_lock_that_cannot_be_removed_does_not_hide_the_error_being_reported(tmp_path, monkeypatch):
    """A folder gone read-only stops the run with its own error; removing the lock then fails too, and that
    failure must not replace the first one."""
    from lightning_genae.experiment.run_lock import RunFolderLock

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

"""`<run>/.genae.lock`: the lock (filelock's flock, which goes with its holder however it ends, so no pid or
age is judged) a run holds on its folder while it writes there, and the owner's record a refusal names."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import BaseFileLock, FileLock, Timeout

from lightning_genae.errors import ConfigError, RunFolderRefused

LOCK_FILE = ".genae.lock"
# What a record names of a SLURM run: the job and array task, which a requeue keeps.
_SLURM_TASK = ("slurm_job_id", "slurm_array_task_id")


def _identity() -> dict[str, Any]:
    """Who takes the lock: host, pid, start time, and under SLURM the job and array task a requeue keeps."""
    record: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    record["started"] = datetime.now().astimezone().isoformat(timespec="seconds")
    record.update({key: os.environ[key.upper()] for key in _SLURM_TASK if os.environ.get(key.upper())})
    if os.environ.get("SLURM_RESTART_COUNT", "").isdigit():
        record["slurm_restart_count"] = int(os.environ["SLURM_RESTART_COUNT"])
    return record


def _read(path: Path, text: bytes | None = None) -> dict[str, Any] | None:
    """The record in the lock file at `path` (or in `text`), None when there is none or it cannot be read."""
    try:
        record = json.loads(path.read_bytes() if text is None else text)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _describe(record: dict[str, Any] | None) -> str:
    if record is None:
        return "its record cannot be read"
    host, pid, started, job, task = (record.get(key) for key in ("host", "pid", "started", *_SLURM_TASK))
    slurm = (f", SLURM job {job}" + (f" task {task}" if task else "")) if job else ""
    return f"host {host}, pid {pid}, started {started}{slurm}"


def _held(path: Path) -> bool:
    """Whether a process holds the lock at `path` now, probed with a shared lock (read access only)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:  # contention (EAGAIN, or EACCES on some filesystems); ENOSYS: no flock there
        return error.errno != errno.ENOSYS
    else:  # a file removed meanwhile was a released lock's: its path may hold a new one
        return os.fstat(fd).st_nlink == 0 and _held(path)
    finally:
        os.close(fd)


def _refusal(run_dir: Path, owner: str) -> RunFolderRefused:
    why = f"--output {run_dir} is in use by another run ({owner})"
    return RunFolderRefused(f"{why}; wait for it to finish, or pick another --output")


@dataclass
class RunFolderLock:
    """`<run>/.genae.lock`, held by this process from `acquire` to `release`."""

    path: Path
    lock: BaseFileLock = field(init=False)
    file: os.stat_result | None = None  # the lock file this process holds

    @classmethod
    def acquire(cls, run_dir: Path) -> RunFolderLock:
        """Take the lock and write this process's record into it; refuse naming a live owner."""
        self = cls(run_dir / LOCK_FILE)
        # A second of tries: a run releasing the lock removes its file, and a probe holds it briefly.
        self.lock = FileLock(self.path, timeout=1.0, on_acquired=self._write_record)
        try:
            self.lock.acquire()
        except Timeout:
            raise _refusal(run_dir, _describe(_read(self.path))) from None
        except OSError as error:
            if error.errno != errno.ENOSYS:  # ENOSYS: a filesystem without flock (Lustre mounted noflock)
                raise
            self.path.unlink(missing_ok=True)
            why = f"--output {run_dir}: its filesystem has no file locks (flock)"
            raise ConfigError(f"{why}; mount it with -o flock (Lustre) or pick another --output") from None
        return self

    def _write_record(self, fd: int) -> None:
        """Write this process's record into the lock it now holds, saying whose record was left there."""
        try:
            left, self.file = os.read(fd, 1 << 16), os.fstat(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_identity()).encode(), 0)
            os.fsync(fd)  # seen by a reader on another node now, not once this run closes the file
        except OSError:
            self.path.unlink(missing_ok=True)  # a lock that cannot be written leaves no file
            raise
        if left.strip():
            from lightning_genae.progress import say  # imported here: progress imports Lightning

            owner = _describe(_read(self.path, left))
            say(f"run folder {self.path.parent}: took over the lock of a run that is gone ({owner})")

    @staticmethod
    def refuse_if_held(run_dir: Path) -> None:
        """Refuse `run_dir` if a run holds its lock now."""
        if (owner := live_lock_owner(run_dir)) is not None:
            raise _refusal(run_dir, owner)

    @staticmethod
    def left_by_this_jobs_earlier_attempt(run_dir: Path) -> bool:
        """Whether `run_dir`'s lock was left by an earlier attempt of this SLURM job and array task."""
        record, mine = _read(run_dir / LOCK_FILE) or {}, _identity()
        same = "slurm_job_id" in mine and all(record.get(key) == mine.get(key) for key in _SLURM_TASK)
        theirs = record.get("slurm_restart_count", 0)
        return same and isinstance(theirs, int) and theirs < mine.get("slurm_restart_count", 0)

    def release(self) -> None:
        """Remove the lock file while holding it, then let go; a folder gone read-only keeps the file."""
        try:  # a file another run made, once this one's was removed by hand, is that run's
            if self.file is not None and os.path.samestat(self.path.stat(), self.file):
                self.path.unlink()
        except OSError:
            pass
        self.lock.release()


def live_lock_owner(run_dir: Path) -> str | None:
    """Who holds `<run_dir>/.genae.lock` now; None when no process does."""
    path = run_dir / LOCK_FILE
    return _describe(_read(path)) if _held(path) else None

"""`<run>/.genae.lock`: who writes a run folder now, placed whole and atomically, and when it is stale.

The lock names its owner (host, pid, start time, SLURM job). A second run into the same folder is refused
with that name instead of interleaving its rows. A lock whose owner is gone (same host, dead pid or a pid
reused since; or this same SLURM job before a requeue), or an unreadable one older than
UNREADABLE_LOCK_GRACE_S, is stale and taken over with a one-line notice.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from lightning_genae.errors import RunFolderRefused, describe_error

__all__ = ["LOCK_FILE", "UNREADABLE_LOCK_GRACE_S", "RunFolderLock", "RunFolderRefused", "live_lock_owner"]

LOCK_FILE = ".genae.lock"


def _process_identity() -> dict[str, Any]:
    """Who holds a lock: host and pid, and under SLURM the job (and array task) that a requeue keeps."""
    identity: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        identity["slurm_job_id"] = job
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        if task:
            identity["slurm_array_task_id"] = task
        restarts = os.environ.get("SLURM_RESTART_COUNT", "")
        if restarts.isdigit():
            identity["slurm_restart_count"] = int(restarts)
    return identity


def _process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        lines = Path("/proc/stat").read_text().splitlines()
        boot = next(float(line.split()[1]) for line in lines if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _pid_alive(pid: int, since: float | None) -> bool:
    """Whether `pid` runs and is the process that took the lock (not a later one that reused the pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    started = _process_start_time(pid)
    # A pid reused after the owner died belongs to a process started after the lock was taken.
    return not (started is not None and since is not None and started > since + 1)


def _describe_owner(record: dict[str, Any]) -> str:
    parts = [f"host {record.get('host', '?')}", f"pid {record.get('pid', '?')}"]
    if record.get("started"):
        parts.append(f"started {record['started']}")
    if record.get("slurm_job_id"):
        task = record.get("slurm_array_task_id")
        parts.append(f"SLURM job {record['slurm_job_id']}" + (f" task {task}" if task else ""))
    return ", ".join(parts)


# How long an unreadable lock is left alone before it counts as stale.
UNREADABLE_LOCK_GRACE_S = 10.0


def _place_whole(path: Path, text: str, token: str) -> None:
    """Create `path` holding `text`, whole or not at all; FileExistsError when `path` exists.

    The text goes to a temporary file first, which is then hard-linked into place (atomic, and refused when
    the name is taken), so no reader ever sees an empty or half-written lock, and a failed write (a full
    disk) leaves nothing behind. A file system without hard links gets an exclusive create instead.
    """
    temporary = path.with_name(f"{path.name}.{token}.tmp")
    try:
        with open(temporary, "x") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
            return
        except FileExistsError:
            raise
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                raise
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            with os.fdopen(handle, "w") as file:
                file.write(text)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    finally:
        temporary.unlink(missing_ok=True)


@dataclass
class RunFolderLock:
    """`<run>/.genae.lock`, held by this process from `acquire` to `release`."""

    path: Path
    token: str

    @classmethod
    def acquire(cls, run_dir: Path) -> RunFolderLock:
        """Take the lock atomically; take over a stale one with a one-line notice."""
        path = run_dir / LOCK_FILE
        token = secrets.token_hex(8)
        record = {
            **_process_identity(),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "started_epoch": time.time(),
            "token": token,
        }
        for _ in range(3):
            try:
                _place_whole(path, json.dumps(record), token)
            except FileExistsError:
                cls._take_over_if_stale(path)
                continue
            return cls(path, token)
        raise RunFolderRefused(
            f"--output {run_dir}: another run keeps taking its lock {path}; wait for it, "
            "or pick another --output"
        )

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    @classmethod
    def _take_over_if_stale(cls, path: Path) -> None:
        """Remove the lock at `path` if its owner is gone; raise RunFolderRefused naming a live owner."""
        run_dir = path.parent
        record = cls._read(path)
        if record == {}:
            return  # released meanwhile: try again
        if record is None:
            # A lock is placed whole (_place_whole), so an unreadable one is no run's lock being written: it
            # was damaged, or left by a crash of a version that wrote it in place. A young one is left to
            # whoever may be replacing it; an older one is stale.
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                return
            if age < UNREADABLE_LOCK_GRACE_S:
                raise RunFolderRefused(
                    f"--output {run_dir} is locked by {path}, which cannot be read (changed {age:.0f} s "
                    f"ago); if no run writes there, remove {path} and run again"
                )
            cls._remove_unreadable(path)
            return
        stale = cls._stale_reason(record)
        if stale is None:
            cls._refuse_live_owner(path, record)
        # Move the stale lock aside (atomic), then check that what moved is the lock judged stale: another
        # process may have taken it over and created a fresh one between our read and the rename.
        aside = path.with_name(f"{LOCK_FILE}.stale-{secrets.token_hex(4)}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        moved = cls._read(aside)
        if moved is not None and moved.get("token") != record.get("token"):
            try:
                os.link(aside, path)  # put the fresh lock back; fails if yet another one appeared
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        # Imported here: console imports Lightning, and the command line checks --output without it.
        from lightning_genae.progress import say

        say(f"run folder {run_dir}: took over the lock of {stale} ({_describe_owner(record)})")

    @staticmethod
    def _remove_unreadable(path: Path) -> None:
        """Move an unreadable lock aside and remove it, unless a readable one replaced it meanwhile."""
        aside = path.with_name(f"{LOCK_FILE}.stale-{secrets.token_hex(4)}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        except OSError as error:
            raise RunFolderRefused(
                f"--output {path.parent} is locked by {path}, which cannot be read and cannot be removed "
                f"({describe_error(error)}); remove {path} by hand and run again"
            ) from None
        if RunFolderLock._read(aside) not in (None, {}):
            try:
                os.link(aside, path)  # a run's lock after all: put it back
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        from lightning_genae.progress import say

        say(
            f"run folder {path.parent}: took over the lock {path}, which could not be read (left by a run "
            "that crashed while taking it)"
        )

    @staticmethod
    def _refuse_live_owner(path: Path, record: dict[str, Any]) -> NoReturn:
        """Refuse the folder of the lock at `path`, held by the live run `record` describes."""
        run_dir, owner = path.parent, _describe_owner(record)
        if record.get("host") != socket.gethostname():
            raise RunFolderRefused(
                f"--output {run_dir} is in use by a run on another machine ({owner}); if that job is "
                f"gone, remove {path} and run again, or pick another --output"
            )
        raise RunFolderRefused(
            f"--output {run_dir} is in use by another run ({owner}); wait for it to finish, "
            "or pick another --output"
        )

    @classmethod
    def refuse_if_held(cls, run_dir: Path) -> None:
        """Refuse `run_dir` if a live run holds its lock (a stale lock is left for `acquire` to judge)."""
        path = run_dir / LOCK_FILE
        record = cls._read(path)
        if record and cls._stale_reason(record) is None:
            cls._refuse_live_owner(path, record)

    @staticmethod
    def _stale_reason(record: dict[str, Any]) -> str | None:
        """Why the lock's owner is gone, or None while it may still be writing.

        On this host the owner's pid decides. Elsewhere only SLURM can tell: a lock of this very job and
        array task from an earlier attempt (a lower SLURM_RESTART_COUNT, or none recorded) is this job's
        own, left by the node it ran on before a requeue.
        """
        mine = _process_identity()
        pid = record.get("pid")
        if record.get("host") == mine["host"] and isinstance(pid, int):
            if pid == mine["pid"]:
                return "an earlier run of this process"
            since = record.get("started_epoch")
            if not _pid_alive(pid, since if isinstance(since, (int, float)) else None):
                return "a run that is gone"
            return None
        job = record.get("slurm_job_id")
        same_job = job and job == mine.get("slurm_job_id")
        if same_job and record.get("slurm_array_task_id") == mine.get("slurm_array_task_id"):
            theirs, ours = record.get("slurm_restart_count"), mine.get("slurm_restart_count")
            if theirs is None or ours is None or theirs < ours:
                return "this SLURM job's previous attempt"
        return None

    @classmethod
    def left_by_this_jobs_earlier_attempt(cls, run_dir: Path) -> bool:
        """Whether `run_dir`'s lock was left by an earlier attempt of this very SLURM job (and array task)
        before SLURM requeued it (this process's SLURM_RESTART_COUNT is higher than the lock records), and
        its process is gone: killed without a chance to undo its start."""
        record = cls._read(run_dir / LOCK_FILE)
        mine = _process_identity()
        ours = mine.get("slurm_restart_count")
        if not record or not mine.get("slurm_job_id") or not isinstance(ours, int) or ours < 1:
            return False
        theirs = record.get("slurm_restart_count")
        return (
            record.get("slurm_job_id") == mine["slurm_job_id"]
            and record.get("slurm_array_task_id") == mine.get("slurm_array_task_id")
            and (theirs is None or (isinstance(theirs, int) and theirs < ours))
            and cls._stale_reason(record) is not None
        )

    def release(self) -> None:
        """Remove the lock, if it is still this process's."""
        record = self._read(self.path)
        if record and record.get("token") == self.token:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                # A folder gone read-only (the failure being reported, usually): the lock stays, and the next
                # run on this host takes it over as stale once this process is gone. Raising here would
                # replace the error that stopped the run with this one.
                pass


def live_lock_owner(run_dir: Path) -> str | None:
    """Who holds `<run_dir>/.genae.lock` while its owner may still be writing; None when free or stale."""
    record = RunFolderLock._read(run_dir / LOCK_FILE)
    if not record or RunFolderLock._stale_reason(record) is not None:
        return None
    return _describe_owner(record)

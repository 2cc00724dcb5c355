"""A run folder belongs to one run: who may write into `--output`, the lock that says who does, and undoing a
start that failed before training.

A folder that already holds a run (its config.yaml, metrics.csv, summary.json or a checkpoint) is only
written into by `--resume` (continuing it) or `--overwrite` (replacing it); anything else is refused before
a byte is written. While a run writes, `<run>/.genae.lock` names its owner (host, pid, start time, SLURM
job), placed whole and atomically, so a second run into the same folder is refused instead of interleaving
its rows. A lock whose owner is gone (same host, dead pid; or this same SLURM job before a requeue), or an
unreadable one older than UNREADABLE_LOCK_GRACE_S, is stale and taken over. A run that fails before its
first training step leaves the folder as it found it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from lightning_genae.errors import ConfigError, describe_error

LOCK_FILE = ".genae.lock"
FAILED_FILE = "failed.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
# The files a run (and a grid, for its cells) writes at the top of its folder.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, "normaliser.json", "eval.json", FAILED_FILE)
# The folders a run writes into, each with the names of what it writes there: `--overwrite` removes those
# and nothing else, so a file a user put beside them (images/holiday.jpg, checkpoints/my_model.pt) stays.
RUN_FOLDERS = {
    # ModelCheckpoint's last/best, versioned (-v1) when a name is taken.
    CHECKPOINT_DIR: re.compile(r"(last|best)(-v\d+)?\.ckpt"),
    # loggers.log_image_grid: `<key>_step0000123.png`.
    "images": re.compile(r"[A-Za-z0-9_.-]+_step\d{7}\.png"),
    # TensorBoardLogger(name="tensorboard", version=""): event files and the hyper-parameters.
    "tensorboard": re.compile(r"events\.out\.tfevents\..+|hparams\.yaml"),
    # wandb: the run id kept for resuming, wandb's own run folders, their link and its logs.
    "wandb": re.compile(
        r"run_id|latest-run|debug(-internal|-cli\..+)?\.log|(offline-)?run-\d{8}_\d{6}-[A-Za-z0-9_-]+"
    ),
}


class RunFolderRefused(ConfigError):
    """The folder is not this invocation's to write: it holds another run, or another run holds its lock.

    A grid reports it for a cell without recording the cell as failed: nothing of the cell went wrong.
    """


def check_output_folder(path: Path, flag: str = "--output") -> None:
    """Refuse a path that is a file, lies under a file, or cannot be written, before anything is made."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a folder; pick a folder path for {flag}")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{flag} {path} lies under {existing}, which is a file; pick a folder path for {flag}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable by this user; pick a writable {flag}")


def started_run_files(path: Path) -> list[str]:
    """The files in `path` that show a run was started or finished there (empty: no run)."""
    if not path.is_dir():
        return []
    found = [name for name in (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE) if (path / name).is_file()]
    found += sorted(f"{CHECKPOINT_DIR}/{ckpt.name}" for ckpt in (path / CHECKPOINT_DIR).glob("*.ckpt"))
    return found


def _refuse_foreign_run(path: Path, files: list[str]) -> None:
    state = "a finished run" if SUMMARY_FILE in files else "a started run"
    fixes = ["replace it with --overwrite", "or pick another --output"]
    if (path / CHECKPOINT_DIR / "last.ckpt").is_file():
        fixes.insert(0, f"continue it with --resume last --output {path}")
    raise RunFolderRefused(f"--output {path} already holds {state} ({', '.join(files)}); {', '.join(fixes)}")


@dataclass
class Removal:
    """What `--overwrite` removed from a run folder, and what it found there that no run writes."""

    removed: list[str]
    kept: list[str]

    def describe(self, path: Path) -> str:
        line = f"--overwrite: removed the previous run's {', '.join(self.removed)} from {path}"
        if self.kept:
            more = len(self.kept) - 5
            shown = ", ".join(self.kept[:5]) + (f" and {more} more" if more > 0 else "")
            line += f"; kept {shown} (not written by a run)"
        return line


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink(missing_ok=True)


def remove_run_entries(path: Path) -> Removal:
    """Delete what a run wrote into `path`: RUN_FILES, and inside RUN_FOLDERS only the names a run writes.

    Anything else (a user's file beside or inside the run's folders) is kept and named; a run folder left
    empty is removed.
    """
    removed, kept = [], []
    for name in RUN_FILES:
        entry = path / name
        if entry.is_file() or entry.is_symlink():
            entry.unlink()
            removed.append(name)
    for name, written in RUN_FOLDERS.items():
        folder = path / name
        if folder.is_symlink() or not folder.is_dir():
            if folder.exists() or folder.is_symlink():
                kept.append(name)
            continue
        count = 0
        for entry in sorted(folder.iterdir()):
            if written.fullmatch(entry.name):
                _remove(entry)
                count += 1
            else:
                kept.append(f"{name}/{entry.name}")
        if count:
            removed.append(f"{name}/")
        if not any(folder.iterdir()):
            folder.rmdir()
    return Removal(removed, kept)


# --- the lock


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
        from lightning_genae.console import say

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
        from lightning_genae.console import say

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

    def release(self) -> None:
        """Remove the lock, if it is still this process's."""
        record = self._read(self.path)
        if record and record.get("token") == self.token:
            self.path.unlink(missing_ok=True)


# --- claiming a folder for one invocation


def _make_folder(path: Path) -> list[Path]:
    """Create `path` and its missing parents; returns the folders this call made, top-down.

    One level at a time, so that a folder another process made at the same moment is never counted as
    ours (and never removed by our undo).
    """
    missing = []
    for candidate in [path, *path.parents]:
        if candidate.is_dir():
            break
        missing.append(candidate)
    made: list[Path] = []
    try:
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            made.append(folder)
    except OSError:
        _remove_empty(made)
        raise
    return made


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders of `folders` that are empty, deepest first (what others put there stays)."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


@dataclass
class ClaimedRunFolder:
    """A run folder this invocation may write: locked, and able to undo a start that failed early."""

    path: Path
    lock: RunFolderLock
    made: list[Path]
    entries_before: set[str] = field(default_factory=set)
    config_before: bytes | None = None
    claimed_at: float = field(default_factory=time.time)

    @classmethod
    def claim(cls, path: Path, *, resuming_from: Path | None, overwrite: bool) -> ClaimedRunFolder:
        """Check that `path` may take this run, make it and lock it; refuse with one line otherwise.

        `resuming_from`: the run folder of the checkpoint a `--resume` continues. A folder that holds a
        run is written into only by a resume of that run or by `overwrite`, whose removal happens here,
        once the lock is held (never under a run that is still writing).
        """
        if overwrite and resuming_from is not None:
            raise ConfigError("--overwrite replaces a run and --resume continues one; give one of them")
        check_output_folder(path)
        files = started_run_files(path)
        if files and not overwrite and not cls._continues(path, resuming_from):
            # A run still writing there is named as such, not taken for a finished or abandoned one.
            RunFolderLock.refuse_if_held(path)
            if resuming_from is not None:
                raise RunFolderRefused(
                    f"--output {path} holds another run ({', '.join(files)}) than the checkpoint's "
                    f"({resuming_from}); resume into {resuming_from} or an empty --output"
                )
            _refuse_foreign_run(path, files)
        made: list[Path] = []
        try:
            made = _make_folder(path)
            lock = RunFolderLock.acquire(path)
        except OSError as error:
            _remove_empty(made)
            raise ConfigError(
                f"--output {path} cannot be written ({describe_error(error)}); pick a writable --output"
            ) from None
        except BaseException:
            # Refused, or interrupted: a folder made for this run is not left behind.
            _remove_empty(made)
            raise
        # Checked again under the lock: a run that started meanwhile has written its config.yaml by now.
        files = started_run_files(path)
        if files and not overwrite and not cls._continues(path, resuming_from):
            lock.release()
            _refuse_foreign_run(path, files)
        if overwrite and files:
            removal = remove_run_entries(path)
            # Imported here: console imports Lightning, and the command line checks --output without it.
            from lightning_genae.console import say

            say(removal.describe(path))
        config_file = path / CONFIG_FILE
        return cls(
            path,
            lock,
            made,
            entries_before=set(os.listdir(path)),
            config_before=config_file.read_bytes() if config_file.is_file() else None,
        )

    @staticmethod
    def _continues(path: Path, resuming_from: Path | None) -> bool:
        return resuming_from is not None and resuming_from.resolve() == path.resolve()

    def wrote_checkpoint(self) -> bool:
        """Whether a checkpoint was saved since the claim (then training ran, whatever a caller saw of it)."""
        checkpoints = (self.path / CHECKPOINT_DIR).glob("*.ckpt")
        return any(ckpt.stat().st_mtime >= self.claimed_at for ckpt in checkpoints)

    def undo(self) -> None:
        """Put the folder back as it was before this invocation (a start that failed before training).

        Never once a checkpoint was saved: under ddp_spawn the training runs in other processes, so the
        caller may not have seen it start.
        """
        if self.wrote_checkpoint():
            return
        if self.path in self.made:
            shutil.rmtree(self.path, ignore_errors=True)
            # Parents made for it go too, unless another run has put something there meanwhile.
            _remove_empty(self.made[:-1])
            return
        for name in set(os.listdir(self.path)) - self.entries_before - {LOCK_FILE}:
            entry = self.path / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if self.config_before is not None:
            (self.path / CONFIG_FILE).write_bytes(self.config_before)

    def release(self) -> None:
        if self.path.is_dir():
            self.lock.release()


def live_lock_owner(run_dir: Path) -> str | None:
    """Who holds `<run_dir>/.genae.lock` while its owner may still be writing; None when free or stale."""
    record = RunFolderLock._read(run_dir / LOCK_FILE)
    if not record or RunFolderLock._stale_reason(record) is not None:
        return None
    return _describe_owner(record)

"""A run folder belongs to one run: only `--resume` or `--overwrite` (overwrite.py) write into one that holds
a run, under its lock (run_lock.py), and a start that fails before training leaves it as it found it."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_genae.errors import ConfigError, RunFolderRefused
from lightning_genae.experiment.overwrite import (
    SetAside,
    finish_a_stopped_overwrite,
    put_back,
    put_back_a_stopped_overwrite,
    refuse_linked_run_folders,
    remove_empty_run_folders,
    remove_entry,
    run_entries,
)
from lightning_genae.experiment.run_lock import LOCK_FILE, RunFolderLock
from lightning_genae.run_files import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CONFIG_HEADER,
    CONFIG_KEY,
    GRID_FILE,
    RUN_FOLDERS,
    SUMMARY_FILE,
    files_named_as_a_runs,
    started_run_files,
)


def check_output_folder(path: Path) -> None:
    """Refuse an --output that cannot become a writable folder (a file, under a file, read-only) or is a
    filesystem's root, which no run owns, before any work; a full disk is met by the first write."""
    resolved = path.expanduser().resolve()
    existing = next(folder for folder in [path, *path.parents] if folder.exists())
    writable = existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
    if resolved == Path(resolved.anchor) or not writable:
        raise ConfigError(f"--output {path}: {existing} is not a writable folder a run may own (nor a root)")


def another_run(path: Path, files: list[str], fixes: list[str]) -> RunFolderRefused:
    """The refusal of `--output path`, which holds the run whose files `started_run_files` found."""
    state = "a finished run" if SUMMARY_FILE in files else "a started run"
    return RunFolderRefused(f"--output {path} already holds {state} ({', '.join(files)}); {', '.join(fixes)}")


def refuse_files_no_run_wrote(path: Path, files: list[str]) -> None:
    """Refuse `--output path` that holds files of a run's names (`files`, a started run's; else eval.json,
    images/...) that no run wrote there: a run would overwrite them and `--overwrite` remove them."""
    named = files if files else files_named_as_a_runs(path)
    if named and not (files and _written_by_a_run(path, files)):
        raise RunFolderRefused(
            f"--output {path} holds {', '.join(named[:5])}{' and more' * (len(named) > 5)}, named as a run's "
            "files but which no run wrote here; move them away or pick another --output"
        )


def _written_by_a_run(path: Path, files: list[str]) -> bool:
    """Whether `files` show a run of this program: a config.yaml a run wrote here, or a checkpoint of one."""
    if _config_written_here(path):
        return True
    checkpoints = [path / name for name in files if name.startswith(f"{CHECKPOINT_DIR}/")]
    return any(_holds_run_configuration(file) for file in checkpoints)


def _holds_run_configuration(checkpoint: Path) -> bool:
    """Whether `checkpoint` is a run's: its pickle names the config key, read as bytes, never unpickled."""
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            return any(_member_holds(archive, name, CONFIG_KEY.encode()) for name in pickles)
    except (OSError, zipfile.BadZipFile):
        return False


def _member_holds(archive: zipfile.ZipFile, name: str, needle: bytes, chunk: int = 1 << 20) -> bool:
    """Whether the archive's member `name` holds `needle`, read a chunk at a time."""
    tail = b""
    with archive.open(name) as member:
        while block := member.read(chunk):
            if needle in tail + block:
                return True
            tail = block[-len(needle) :]
    return False


def _config_written_here(path: Path) -> bool:
    """Whether path/config.yaml begins with the line a run writes there, which names the run's folder: a copy
    in a folder of another name is the user's; a run's folder moved with its name is still the run's."""
    try:
        with (path / CONFIG_FILE).open(encoding="utf-8", errors="replace") as file:
            first = file.readline().rstrip("\n")
    except OSError:
        return False
    if not first.startswith(CONFIG_HEADER):
        return False
    named = first.rpartition("--config ")[2].strip()
    if not os.path.isabs(named):
        return True
    named_folder = os.path.dirname(os.path.realpath(named))
    return named_folder == os.path.realpath(path) or os.path.basename(named_folder) == path.resolve().name


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None where it is missing, unreadable or no object (edited by hand)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's summary.json when it is a finished run's (with its final metrics), else None."""
    summary = read_json_object(run_dir / SUMMARY_FILE)
    return summary if summary is not None and isinstance(summary.get("final_metrics"), dict) else None


def started_by_an_earlier_attempt_of_this_job(path: Path, config_text: str) -> bool:
    """Whether `path` holds only the start of this very SLURM job's earlier attempt, killed before its first
    checkpoint (its lock says so), its config.yaml the one this run writes (`config_text`)."""
    files = started_run_files(path)
    if CONFIG_FILE not in files or any(name.startswith(f"{CHECKPOINT_DIR}/") for name in files):
        return False
    try:
        same_command = (path / CONFIG_FILE).read_text(encoding="utf-8") == config_text
    except (OSError, UnicodeDecodeError):
        return False
    return same_command and RunFolderLock.left_by_this_jobs_earlier_attempt(path)


def _entries_of(path: Path) -> list[str]:
    """The names in `path`, and in each of the run's own folders there (`checkpoints/last.ckpt`)."""
    names = os.listdir(path)
    for folder in RUN_FOLDERS:
        if folder in names and (path / folder).is_dir() and not (path / folder).is_symlink():
            names += [f"{folder}/{name}" for name in os.listdir(path / folder)]
    return names


def _make_folder(path: Path) -> list[Path]:
    """Create `path` and its missing parents one by one (never another's); those made, top-down."""
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
    # The run that `--overwrite` replaces, until the new one trains.
    set_aside: SetAside | None = None
    replacing: str = "--overwrite"
    undone: bool = False

    @classmethod
    def claim(
        cls, path: Path, *, resuming_from: Path | None, overwrite: bool, replacing: str = "--overwrite"
    ) -> ClaimedRunFolder:
        """Check that `path` may take this run, make it and lock it; `overwrite` sets the old aside."""
        if overwrite and resuming_from is not None:
            raise ConfigError("--overwrite replaces a run and --resume continues one; give one of them")
        if path.is_dir():
            # Refused before the lock is taken: taking it rewrites the record a killed run left there, which
            # its requeued job reads (`started_by_an_earlier_attempt_of_this_job`).
            put_back_a_stopped_overwrite(path)
            cls._holds_a_run_to_replace(path, resuming_from, overwrite, locked=False)
        made = _make_folder(path)
        lock = None
        try:
            lock = RunFolderLock.acquire(path)
            finish_a_stopped_overwrite(path)
            # Again under the lock: a run or a grid that started meanwhile has written its files by now.
            replaced = cls._holds_a_run_to_replace(path, resuming_from, overwrite, locked=True)
            # Set aside, not removed: a mistake found after this (the data, an augmenter checkpoint, the
            # model) stops the run before it trains, and the run replaced must then still be there.
            set_aside = SetAside.take(path) if replaced else None
        except BaseException:
            if lock is not None:
                lock.release()
            _remove_empty(made)  # refused, or interrupted: a folder made for this run is not left behind
            raise
        config_file = path / CONFIG_FILE
        return cls(
            path,
            lock,
            made,
            entries_before=set(_entries_of(path)),
            config_before=config_file.read_bytes() if config_file.is_file() else None,
            set_aside=set_aside,
            replacing=replacing,
        )

    @staticmethod
    def _holds_a_run_to_replace(
        path: Path, resuming_from: Path | None, overwrite: bool, locked: bool
    ) -> bool:
        """Refuse `path` unless it may take the run; whether it holds a run `overwrite` replaces."""
        if (path / GRID_FILE).exists():
            # The grid's files are not a run's to remove, and the run's would lie among its cells.
            raise RunFolderRefused(
                f"--output {path} is an ablation grid's folder ({GRID_FILE}); pick another"
            )
        files = started_run_files(path)
        refuse_files_no_run_wrote(path, files)
        if not files:
            return False
        if resuming_from is not None and resuming_from.resolve() == path.resolve():
            return False
        if not locked and not overwrite:
            # A run still writing there is named as such, not taken for a finished or abandoned one.
            RunFolderLock.refuse_if_held(path)
        if resuming_from is not None:
            raise RunFolderRefused(
                f"--output {path} holds another run ({', '.join(files)}) than the checkpoint's "
                f"({resuming_from}); resume into {resuming_from} or an empty --output"
            )
        if not overwrite:
            fixes = ["replace it with --overwrite", "or pick another --output"]
            if (path / CHECKPOINT_DIR / "last.ckpt").is_file():
                fixes.insert(0, f"continue it with --resume last --output {shlex.quote(str(path))}")
            raise another_run(path, files, fixes)
        refuse_linked_run_folders(path)
        return True

    def training_started(self) -> None:
        """The new run trains: the run it replaces goes for good, and the notice says what went."""
        if self.set_aside is None:
            return
        set_aside, self.set_aside = self.set_aside, None
        failed = set_aside.remove()
        # Imported here: console imports Lightning, and the command line checks --output without it.
        from lightning_genae.progress import say, warn

        if failed is not None:
            warn(failed)
        else:
            say(set_aside.removal.describe(self.path, self.replacing))

    def wrote_checkpoint(self) -> bool:
        """Whether the run saved a checkpoint (last.ckpt, best.ckpt) since the claim: then training ran."""
        written = RUN_FOLDERS[CHECKPOINT_DIR]
        checkpoints = [
            ckpt
            for ckpt in (self.path / CHECKPOINT_DIR).glob("*.ckpt")
            if written.fullmatch(ckpt.name) and ckpt.is_file()
        ]
        return any(ckpt.stat().st_mtime >= self.claimed_at for ckpt in checkpoints)

    def undo(self) -> None:
        """Put the folder back as it was before this invocation (a start that failed before training); never
        once a checkpoint was saved, and once only (a second pass would take what the first put back)."""
        if self.undone or self.wrote_checkpoint():
            return
        self.undone = True
        # What this invocation wrote goes first, then a replaced run's files come back (`release` keeps them).
        set_aside, self.set_aside = self.set_aside, None
        self._remove_new_entries()
        if set_aside is not None:
            put_back(self.path)
            return
        if self.path in self.made:
            if set(os.listdir(self.path)) <= {LOCK_FILE}:
                shutil.rmtree(self.path, ignore_errors=True)
            # Parents made for it go too, unless another run has put something there meanwhile.
            _remove_empty(self.made[:-1])
            return
        if self.config_before is not None:
            (self.path / CONFIG_FILE).write_bytes(self.config_before)

    def _remove_new_entries(self) -> None:
        """Remove what the run wrote since the claim (not a user's file), and the folders it made if empty."""
        for name in sorted(set(run_entries(self.path)[0]) - self.entries_before):
            remove_entry(self.path / name)
        made = [name for name in RUN_FOLDERS if name not in self.entries_before]
        remove_empty_run_folders(self.path, made)

    def release(self) -> None:
        # A run that ended without an undo replaced the earlier one, whether or not it saw a training batch.
        self.training_started()
        self.lock.release()

"""A run folder belongs to one run: who may write into `--output`, and undoing a start that failed
before training.

A folder that already holds a run (its config.yaml, metrics.csv, summary.json or a checkpoint) is only
written into by `--resume` (continuing it) or `--overwrite` (replacing it); anything else is refused before
a byte is written. While a run writes, it holds the folder's lock (run_lock.py), so a second run into the
same folder is refused instead of interleaving its rows. A run that fails before its first training step
leaves the folder as it found it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import time
import zipfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from lightning_genae.cluster import global_rank
from lightning_genae.errors import ConfigError, RunFolderRefused, describe_error
from lightning_genae.experiment.run_lock import LOCK_FILE, RunFolderLock
from lightning_genae.run_files import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CONFIG_HEADER,
    CONFIG_KEY,
    GRID_FILE,
    RUN_FILES,
    RUN_FOLDERS,
    SUMMARY_FILE,
    WANDB_RUN_ID,
    files_named_as_a_runs,
    started_run_files,
)

# Where `--overwrite` keeps the replaced run's files until the new run trains (SetAside): while they are
# moved, once all are, and once the new run trained (being removed).
SETTING_ASIDE_DIR = ".genae-replacing"
REPLACED_DIR = ".genae-replaced"
REMOVED_DIR = ".genae-replaced-removed"
# What this package writes as a W&B run id, and W&B takes: letters, digits, '_' and '-'.
WANDB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _kept_wandb_id(path: Path) -> str | None:
    """The W&B run id the run in `path` keeps in WANDB_RUN_ID; None where it used no W&B logger, or the file
    holds no id (damaged or edited: no W&B folder is then known for the run's)."""
    try:
        kept = (path / WANDB_RUN_ID).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return kept if WANDB_ID.fullmatch(kept) else None


def written_by_the_run(folder: str, name: str, wandb_id: str | None) -> bool:
    """Whether `folder/name` (folder one of RUN_FOLDERS) is of a name the run writes there. In wandb/, W&B's
    run folders and logs are the run's only where it used W&B (`wandb_id`, from `_kept_wandb_id`), and a run
    folder only of that id: W&B writes into ./wandb by default, so another program's or another run's W&B
    runs may lie there."""
    written = RUN_FOLDERS[folder].fullmatch(name)
    if written is None:
        return False
    if folder != "wandb" or f"{folder}/{name}" == WANDB_RUN_ID:
        return True
    # A W&B run folder names its run's id (`id`); its link and logs name none.
    return wandb_id is not None and written["id"] in (None, wandb_id)


def check_output_folder(path: Path, flag: str = "--output") -> None:
    """Refuse a path that is a file, lies under a file, is a filesystem's root or cannot be written, before
    anything is made."""
    resolved = path.expanduser().resolve()
    if resolved == Path(resolved.anchor):
        raise ConfigError(f"{flag} {path} is the filesystem's root; give a folder of the run's own")
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
    # Every run writes into these folders, but only after it trained (the images at its first validation),
    # so a path there that cannot be a folder would stop it late, with a traceback.
    check_run_subfolders(path, (CHECKPOINT_DIR, "images"), flag)


def check_run_subfolders(path: Path, names: Collection[str], flag: str = "--output") -> None:
    """Refuse a folder `names` of `path` that a run would write into and cannot: a link to nothing, a file."""
    for name in names:
        folder = path / name
        if folder.is_symlink() and not folder.exists():
            raise ConfigError(
                f"{flag} {path}: {name} is a link to {os.readlink(folder)}, which does not exist; create the "
                "folder it points to, or remove the link"
            )
        if folder.exists() and not folder.is_dir():
            raise ConfigError(
                f"{flag} {path}: {name} is a file, where the run writes a folder of that name; move it away, "
                f"or pick another {flag}"
            )


def _refuse_grid_folder(path: Path) -> None:
    """Refuse an ablation grid's folder as a run's --output, even with --overwrite: the grid's files are not
    a run's to remove, and the run's would lie among its cells."""
    if (path / GRID_FILE).exists():
        raise RunFolderRefused(
            f"--output {path} is an ablation grid's folder ({GRID_FILE}), and a run there would write among "
            f"its cells; pick another --output (a folder of its own, such as {path / 'extra-run'})"
        )


def _refuse_foreign_run(path: Path, files: list[str]) -> None:
    fixes = ["replace it with --overwrite", "or pick another --output"]
    if (path / CHECKPOINT_DIR / "last.ckpt").is_file():
        fixes.insert(0, f"continue it with --resume last --output {shlex.quote(str(path))}")
    refuse_another_run(path, files, fixes)


def refuse_another_run(path: Path, files: list[str], fixes: list[str]) -> NoReturn:
    """Refuse `--output path`, which holds the run whose files `started_run_files` found, naming `fixes`.

    A run still writing there is named as such (its lock), not taken for a finished or abandoned one.
    """
    RunFolderLock.refuse_if_held(path)
    state = "a finished run" if SUMMARY_FILE in files else "a started run"
    raise RunFolderRefused(f"--output {path} already holds {state} ({', '.join(files)}); {', '.join(fixes)}")


def refuse_files_no_run_wrote(path: Path, files: list[str]) -> None:
    """Refuse `--output path` whose files of a run's names (`started_run_files`) no run wrote, even with
    --overwrite, which removes a run's files by name and would remove a user's config.yaml or metrics.csv."""
    if not files or _written_by_a_run(path, files):
        return
    named = _config_header_names(path)
    if named is None:
        why = f"no checkpoint of a run, and its {CONFIG_FILE} does not begin with {CONFIG_HEADER!r}"
    else:
        why = (
            f"no checkpoint of a run, and its {CONFIG_FILE} is {named}'s (a copy, or a run moved to a folder "
            "of another name before its first checkpoint: remove its files if so)"
        )
    raise RunFolderRefused(
        f"--output {path} holds {', '.join(files)}, which no run wrote here ({why}); pick another --output "
        "(--overwrite never removes them)"
    )


def refuse_linked_run_folders(path: Path) -> None:
    """Refuse `--overwrite` of a folder whose checkpoints/ (images/, ...) is a link to a folder holding files
    of the names a run writes: --overwrite removes only what lies in the run's own folder, and the new run
    would write over those files through the link (another run's best.ckpt and last.ckpt)."""
    for name, written in RUN_FOLDERS.items():
        folder = path / name
        if not (folder.is_symlink() and folder.is_dir()):
            continue
        held = sorted(entry.name for entry in folder.iterdir() if written.fullmatch(entry.name))
        if held:
            raise RunFolderRefused(
                f"--overwrite: {folder} is a link to {folder.resolve()}, which holds {', '.join(held[:3])}"
                f"{' and more' if len(held) > 3 else ''}; --overwrite removes only what lies in the run's "
                "folder and the new run would write over them through the link: remove the link, or empty "
                "the folder it points to first"
            )


def refuse_run_names_without_a_run(path: Path) -> None:
    """Refuse `--output path` that holds no run but holds files of the names a run writes (eval.json,
    images/samples_step0000100.png...): the run would overwrite them, and a later `--overwrite` would remove
    them as the run's."""
    named = files_named_as_a_runs(path)
    if not named:
        return
    more = len(named) - 5
    shown = ", ".join(named[:5]) + (f" and {more} more" if more > 0 else "")
    raise RunFolderRefused(
        f"--output {path} holds {shown}, named as a run's files but with no run here (no {CONFIG_FILE} or "
        "checkpoint), so a run would overwrite them and --overwrite would remove them; move them away or "
        "pick another --output"
    )


def _written_by_a_run(path: Path, files: list[str]) -> bool:
    """Whether `files` (of `started_run_files`) show a run of this program: one of its checkpoints, or a
    config.yaml a run wrote for this folder."""
    # The config.yaml's first line before the checkpoints: one line against a zip's pickle per checkpoint.
    if _config_written_here(path):
        return True
    checkpoints = [path / name for name in files if name.startswith(f"{CHECKPOINT_DIR}/")]
    return any(_holds_run_configuration(file) for file in checkpoints)


def _holds_run_configuration(checkpoint: Path) -> bool:
    """Whether `checkpoint` is a run's: a torch zip whose pickle names the run configuration's key. Read as
    bytes, never unpickled: another Lightning program's `last.ckpt` is no run of this one."""
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            return any(_member_holds(archive, name, CONFIG_KEY.encode()) for name in pickles)
    except (OSError, zipfile.BadZipFile):
        return False


def _member_holds(archive: zipfile.ZipFile, name: str, needle: bytes, chunk: int = 1 << 20) -> bool:
    """Whether the archive's member `name` holds `needle`, read a chunk at a time: another program's file
    may hold a member of gigabytes."""
    tail = b""
    with archive.open(name) as member:
        while block := member.read(chunk):
            if needle in tail + block:
                return True
            tail = block[-len(needle) :]
    return False


def _config_written_here(path: Path) -> bool:
    """Whether path/config.yaml begins with the first line a run writes there. That line names the run's
    folder: a copy of a run's file in a folder of another name is the user's; a run's folder moved with its
    name (a grid's root moved, with its cells) is still the run's; an older run's line names no absolute
    path and is taken."""
    named = _config_header_names(path)
    if named is None:
        return False
    if not os.path.isabs(named):
        return True
    named_folder = os.path.dirname(os.path.realpath(named))
    return named_folder == os.path.realpath(path) or os.path.basename(named_folder) == path.resolve().name


def _config_header_names(path: Path) -> str | None:
    """The config.yaml that path/config.yaml's first line names, or None when it is no run's line."""
    try:
        with (path / CONFIG_FILE).open(encoding="utf-8", errors="replace") as file:
            first = file.readline().rstrip("\n")
    except OSError:
        return None
    if not first.startswith(CONFIG_HEADER):
        return None
    return first.rpartition("--config ")[2].strip()


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's summary.json when it is a finished run's (a JSON object with its final metrics), else
    None (none, unreadable, or another file of that name)."""
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("final_metrics"), dict):
        return None
    return summary


def started_by_an_earlier_attempt_of_this_job(path: Path, config_text: str) -> bool:
    """Whether `path` holds only the start of this very SLURM job's earlier attempt, killed before its first
    checkpoint (SLURM's SIGKILL at the end of a preemption's grace period): the job was requeued (a higher
    SLURM_RESTART_COUNT than the lock left there records), that lock's process is gone, there is no
    checkpoint to resume, and the folder's config.yaml is the one this run writes (`config_text`), so the
    same command. Another command of the same allocation (the same job id, no requeue) is not let in."""
    files = started_run_files(path)
    if CONFIG_FILE not in files or any(name.startswith(f"{CHECKPOINT_DIR}/") for name in files):
        return False
    try:
        same_command = (path / CONFIG_FILE).read_text(encoding="utf-8") == config_text
    except (OSError, UnicodeDecodeError):
        return False
    return same_command and RunFolderLock.left_by_this_jobs_earlier_attempt(path)


@dataclass
class Removal:
    """What `--overwrite` removed from a run folder, and what it found there that no run writes."""

    removed: list[str]
    kept: list[str]

    def describe(self, path: Path, why: str = "--overwrite") -> str:
        line = f"{why}: removed the previous run's {', '.join(self.removed)} from {path}"
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


def _run_entries(path: Path) -> tuple[list[str], Removal]:
    """What a run wrote into `path` (RUN_FILES, and inside RUN_FOLDERS only the names a run writes), as
    paths relative to it, and the Removal that names them and what else the folder holds."""
    entries, removed, kept = [], [], []
    wandb_id = _kept_wandb_id(path)
    for name in RUN_FILES:
        entry = path / name
        if entry.is_file() or entry.is_symlink():
            entries.append(name)
            removed.append(name)
    for name in RUN_FOLDERS:
        folder = path / name
        if folder.is_symlink() or not folder.is_dir():
            if folder.exists() or folder.is_symlink():
                kept.append(name)
            continue
        count = 0
        for entry in sorted(folder.iterdir()):
            # A run writes files there, and folders only in wandb/ (W&B's run folders): a user's folder named
            # like a picture or a checkpoint is the user's.
            is_folder = entry.is_dir() and not entry.is_symlink()
            if written_by_the_run(name, entry.name, wandb_id) and (name == "wandb" or not is_folder):
                entries.append(f"{name}/{entry.name}")
                count += 1
            else:
                kept.append(f"{name}/{entry.name}")
        if count:
            removed.append(f"{name}/")
    # What a user keeps beside the run's files is named too (the lock is this invocation's own; a set-aside
    # folder that a replacing run killed before it trained left behind is a run's).
    ours = {*RUN_FILES, *RUN_FOLDERS, LOCK_FILE, SETTING_ASIDE_DIR, REPLACED_DIR, REMOVED_DIR}
    kept += [
        entry.name + ("/" if entry.is_dir() and not entry.is_symlink() else "")
        for entry in sorted(path.iterdir())
        if entry.name not in ours
    ]
    return entries, Removal(removed, kept)


def _remove_empty_run_folders(path: Path, names: Collection[str] = tuple(RUN_FOLDERS)) -> None:
    for name in names:
        folder = path / name
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()


def remove_run_entries(path: Path) -> Removal:
    """Delete what a run wrote into `path`: RUN_FILES, and inside RUN_FOLDERS only the names a run writes.

    Anything else (a user's file beside or inside the run's folders) is kept and named; a run folder left
    empty is removed.
    """
    entries, removal = _run_entries(path)
    for entry in entries:
        _remove(path / entry)
    _remove_empty_run_folders(path)
    return removal


@dataclass
class SetAside:
    """A run's files that `--overwrite` moved aside: removed for good once the new run trains, put back if it
    stops before that (a refused checkpoint, missing data, Ctrl-C), or by the next start in the folder if it
    was killed (`put_back_a_stopped_overwrite`).

    The folder they lie in says how far the replacement got, each step a rename: SETTING_ASIDE_DIR while
    they are moved (or moved back: every run file still in the folder is the replaced run's), REPLACED_DIR
    once all are (what the folder holds beside it is the new run's), REMOVED_DIR once the new run trained.
    """

    path: Path
    removal: Removal

    @classmethod
    def take(cls, path: Path) -> SetAside:
        """Move the run's files in `path` aside; one that cannot be moved puts those already moved back and
        stops the run in one line."""
        moving = path / SETTING_ASIDE_DIR
        entries, removal = _run_entries(path)
        moving.mkdir()
        try:
            for entry in entries:
                (moving / entry).parent.mkdir(parents=True, exist_ok=True)
                # A rename within the folder: instant, whatever the checkpoints' size.
                os.replace(path / entry, moving / entry)
        except OSError as error:
            _move_back(path, moving)
            raise ConfigError(
                f"--overwrite: {path / entry} cannot be moved aside ({describe_error(error)}); nothing was "
                "removed: make the run's files writable, or pick another --output"
            ) from None
        os.replace(moving, path / REPLACED_DIR)
        _remove_empty_run_folders(path)
        return cls(path, removal)

    def put_back(self) -> None:
        _put_back(self.path)

    def remove(self) -> str | None:
        """Remove the set-aside files for good; the error, where one could not be (a file still open over
        NFS, a read-only file), as a line to say: the new run trains on regardless."""
        removed = self.path / REMOVED_DIR
        try:
            # First renamed: whatever stops the removal, the files are never taken for a run to put back.
            os.replace(self.path / REPLACED_DIR, removed)
            _remove(removed)
        except OSError as error:
            return (
                f"--overwrite: the replaced run's files in {self.path} could not all be removed "
                f"({describe_error(error)}); remove {removed} once this run is done"
            )
        return None


def _put_back(path: Path) -> None:
    """The run set aside in `path`'s REPLACED_DIR back in its place: renamed to SETTING_ASIDE_DIR first (from
    then on every run file in the folder is the replaced run's), then each file moved back over whatever
    the new run wrote in its place (its config.yaml)."""
    moving = path / SETTING_ASIDE_DIR
    os.replace(path / REPLACED_DIR, moving)
    _move_back(path, moving)


def _move_back(path: Path, moving: Path) -> None:
    """Every file under `moving` back to its place in `path`, then `moving` removed."""
    for source in sorted(moving.rglob("*")):
        target = path / source.relative_to(moving)
        if source.is_dir() and not source.is_symlink():
            target.mkdir(parents=True, exist_ok=True)  # an empty one too (a wandb run's tmp/)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    _remove(moving)


def put_back_a_stopped_overwrite(path: Path) -> None:
    """Finish what an `--overwrite` killed part-way (`kill -9`, SLURM's SIGKILL, out of memory) left in
    `path`: a run set aside before the new one trained is put back (what the killed run wrote beside it
    removed first), one it was still moving is moved back, one a trained run replaced is removed. Under
    the folder's lock, so a second start at the same moment waits its turn and finds nothing left to do;
    a live run holding the lock is left alone (its set-aside is its own). What it did is said in one line
    on stderr by rank 0, for every start that finds it (a run, a resume, an evaluation, a grid's cell).
    """
    steps = [path / name for name in (SETTING_ASIDE_DIR, REPLACED_DIR, REMOVED_DIR)]
    if not path.is_dir() or not any(step.exists() for step in steps):
        return
    try:
        lock = RunFolderLock.acquire(path)
    except (RunFolderRefused, OSError):
        return
    try:
        moving, held, removed = steps
        said = None
        if removed.exists():
            try:
                _remove(removed)
            except OSError as error:
                said = f"{path}: {removed} (a replaced run) could not be removed ({describe_error(error)})"
        if moving.exists():
            # Killed while moving: every run file in the folder is still the replaced run's.
            _move_back(path, moving)
            said = f"{path}: moved back the files an --overwrite, killed while it set them aside, had moved"
        elif held.exists():
            # Killed before its run trained: the run comes back over what the killed run wrote in its files'
            # places; nothing else beside it is taken for the killed run's.
            _put_back(path)
            said = f"{path}: put back the run that an --overwrite, stopped before it trained, had set aside"
        if said is not None and global_rank() == 0:
            print(said, file=sys.stderr, flush=True)
    finally:
        lock.release()


def set_aside_run_in(path: Path) -> Path | None:
    """The run folder whose set-aside (SETTING_ASIDE_DIR, REPLACED_DIR, REMOVED_DIR) `path` is in, if any."""
    for parent in path.absolute().parents:
        if parent.name in (SETTING_ASIDE_DIR, REPLACED_DIR, REMOVED_DIR):
            return parent.parent
    return None


# --- claiming a folder for one invocation


def _entries_of(path: Path) -> list[str]:
    """The names in `path`, and in each of the run's own folders there (`checkpoints/last.ckpt`)."""
    names = os.listdir(path)
    for folder in RUN_FOLDERS:
        if folder in names and (path / folder).is_dir() and not (path / folder).is_symlink():
            names += [f"{folder}/{name}" for name in os.listdir(path / folder)]
    return names


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
    # The run that `--overwrite` replaces, until the new one trains.
    set_aside: SetAside | None = None
    replacing: str = "--overwrite"
    undone: bool = False

    @classmethod
    def claim(
        cls, path: Path, *, resuming_from: Path | None, overwrite: bool, replacing: str = "--overwrite"
    ) -> ClaimedRunFolder:
        """Check that `path` may take this run, make it and lock it; refuse with one line otherwise.

        `resuming_from`: the run folder of the checkpoint a `--resume` continues. A folder that holds a
        run is written into only by a resume of that run or by `overwrite`, whose removal happens here,
        once the lock is held (never under a run that is still writing), and is said with `replacing`.
        """
        if overwrite and resuming_from is not None:
            raise ConfigError("--overwrite replaces a run and --resume continues one; give one of them")
        check_output_folder(path)
        put_back_a_stopped_overwrite(path)
        _refuse_grid_folder(path)
        files = started_run_files(path)
        refuse_files_no_run_wrote(path, files)
        if not files and path.is_dir():
            refuse_run_names_without_a_run(path)
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
        # Checked again under the lock: a run that started meanwhile has written its config.yaml by now, and
        # a grid started meanwhile its grid.json.
        files = started_run_files(path)
        try:
            refuse_files_no_run_wrote(path, files)
        except RunFolderRefused:
            lock.release()
            raise
        if (path / GRID_FILE).exists() or (
            files and not overwrite and not cls._continues(path, resuming_from)
        ):
            lock.release()
            _refuse_grid_folder(path)
            _refuse_foreign_run(path, files)
        set_aside = None
        if overwrite and files:
            try:
                refuse_linked_run_folders(path)
                # Set aside, not removed: a mistake found after this (the data, an augmenter checkpoint, the
                # model) stops the run before it trains, and the run replaced must then still be there.
                set_aside = SetAside.take(path)
            except BaseException:
                lock.release()
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

    @staticmethod
    def _continues(path: Path, resuming_from: Path | None) -> bool:
        return resuming_from is not None and resuming_from.resolve() == path.resolve()

    def wrote_checkpoint(self) -> bool:
        """Whether a checkpoint was saved since the claim (then training ran, whatever a caller saw of it).
        Only the run's own (last.ckpt, best.ckpt): a user's file there may carry any time."""
        written = RUN_FOLDERS[CHECKPOINT_DIR]
        checkpoints = [
            ckpt
            for ckpt in (self.path / CHECKPOINT_DIR).glob("*.ckpt")
            if written.fullmatch(ckpt.name) and ckpt.is_file()
        ]
        return any(ckpt.stat().st_mtime >= self.claimed_at for ckpt in checkpoints)

    def undo(self) -> None:
        """Put the folder back as it was before this invocation (a start that failed before training).

        Never once a checkpoint was saved: under ddp_spawn the training runs in other processes, so the
        caller may not have seen it start. Once only: a stop signal's handler and the failed start's own
        handling both ask for it, and a second pass would take the files the first put back for new ones.
        """
        if self.undone or self.wrote_checkpoint():
            return
        self.undone = True
        if self.set_aside is not None:
            # What this invocation wrote goes first (below), then the replaced run's files come back.
            set_aside, self.set_aside = self.set_aside, None
            self._remove_new_entries()
            set_aside.put_back()
            return
        self._remove_new_entries()
        if self.path in self.made:
            if set(os.listdir(self.path)) <= {LOCK_FILE}:
                shutil.rmtree(self.path, ignore_errors=True)
            # Parents made for it go too, unless another run has put something there meanwhile.
            _remove_empty(self.made[:-1])
            return
        if self.config_before is not None:
            (self.path / CONFIG_FILE).write_bytes(self.config_before)

    def _remove_new_entries(self) -> None:
        """Remove what the run wrote since the claim: what `_run_entries` takes for a run's that the folder
        did not hold then. A file a user put there while the run set up (notes, a picture in images/) is
        not the run's, and stays; the run's folders this start made go once empty."""
        for name in sorted(set(_run_entries(self.path)[0]) - self.entries_before):
            _remove(self.path / name)
        made = [name for name in RUN_FOLDERS if name not in self.entries_before]
        _remove_empty_run_folders(self.path, made)

    def release(self) -> None:
        # A run that ended without an undo replaced the earlier one, whether or not it saw a training batch.
        self.training_started()
        self.lock.release()

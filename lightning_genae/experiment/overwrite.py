"""--overwrite: what a run wrote into its folder is set aside until the new run trains, then removed, or put
back where the new run stopped before that; a user's file beside or inside them is kept and named."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from lightning_genae.cluster import global_rank
from lightning_genae.errors import RunFolderRefused, describe_error
from lightning_genae.experiment.run_lock import LOCK_FILE, RunFolderLock
from lightning_genae.run_files import RUN_FILES, RUN_FOLDERS, WANDB_RUN_ID

# The replaced run's files until the new run trains (SetAside), then until they are removed.
REPLACED_DIR = ".genae-replaced"
REMOVED_DIR = ".genae-replaced-removed"
# What this package writes as a W&B run id, and W&B takes: letters, digits, '_' and '-'.
WANDB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def kept_wandb_id(path: Path) -> str | None:
    """The W&B run id the run in `path` keeps in WANDB_RUN_ID; None where it has none."""
    try:
        kept = (path / WANDB_RUN_ID).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return kept if WANDB_ID.fullmatch(kept) else None


def written_by_the_run(folder: str, name: str, wandb_id: str | None) -> bool:
    """Whether `folder/name` (folder one of RUN_FOLDERS) is of a name the run writes there; in wandb/, a W&B
    run folder only of the run's own id (`wandb_id`): other programs' W&B runs may lie there."""
    written = RUN_FOLDERS[folder].fullmatch(name)
    if written is None:
        return False
    if folder != "wandb" or f"{folder}/{name}" == WANDB_RUN_ID:
        return True
    # A W&B run folder names its run's id (`id`); its link and logs name none.
    return wandb_id is not None and written["id"] in (None, wandb_id)


def refuse_linked_run_folders(path: Path) -> None:
    """Refuse `--overwrite` of a folder whose checkpoints/ (images/, ...) links to files of a run's names."""
    for name, written in RUN_FOLDERS.items():
        folder = path / name
        if not (folder.is_symlink() and folder.is_dir()):
            continue
        held = sorted(entry.name for entry in folder.iterdir() if written.fullmatch(entry.name))
        if held:
            raise RunFolderRefused(
                f"--overwrite: {folder} is a link to {folder.resolve()}, which holds {', '.join(held[:3])}"
                f"{' and more' if len(held) > 3 else ''}; remove the link, or empty the folder it points to"
            )


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


def remove_entry(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink(missing_ok=True)


def run_entries(path: Path) -> tuple[list[str], Removal]:
    """What a run wrote into `path` (relative), and the Removal naming them and what else it holds."""
    entries, removed, kept = [], [], []
    wandb_id = kept_wandb_id(path)
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
    ours = {*RUN_FILES, *RUN_FOLDERS, LOCK_FILE, REPLACED_DIR, REMOVED_DIR}
    kept += [
        entry.name + ("/" if entry.is_dir() and not entry.is_symlink() else "")
        for entry in sorted(path.iterdir())
        if entry.name not in ours
    ]
    return entries, Removal(removed, kept)


def remove_empty_run_folders(path: Path, names: Collection[str] = tuple(RUN_FOLDERS)) -> None:
    for name in names:
        folder = path / name
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()


@dataclass
class SetAside:
    """A run's files `--overwrite` moved aside: removed once the new run trains, else put back."""

    path: Path
    removal: Removal

    @classmethod
    def take(cls, path: Path) -> SetAside:
        """Move the run's files in `path` aside; one that cannot be moved puts those already moved back."""
        held = path / REPLACED_DIR
        entries, removal = run_entries(path)
        held.mkdir()
        try:
            for entry in entries:
                (held / entry).parent.mkdir(parents=True, exist_ok=True)
                # A rename within the folder: instant, whatever the checkpoints' size.
                os.replace(path / entry, held / entry)
        except OSError:
            put_back(path)
            raise
        remove_empty_run_folders(path)
        return cls(path, removal)

    def remove(self) -> str | None:
        """Remove the set-aside files for good; the error, where one could not be, as a line to say."""
        removed = self.path / REMOVED_DIR
        try:
            # First renamed: whatever stops the removal, the files are never taken for a run to put back.
            os.replace(self.path / REPLACED_DIR, removed)
            remove_entry(removed)
        except OSError as error:
            return f"--overwrite: could not remove {removed} ({describe_error(error)}); remove it later"
        return None


def put_back(path: Path) -> None:
    """Every file set aside in `path`'s REPLACED_DIR back in place; a stop leaves the rest to the next."""
    held = path / REPLACED_DIR
    for source in sorted(held.rglob("*")):
        target = path / source.relative_to(held)
        if source.is_dir() and not source.is_symlink():
            target.mkdir(parents=True, exist_ok=True)  # an empty one too (a wandb run's tmp/)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    remove_entry(held)


def put_back_a_stopped_overwrite(path: Path) -> None:
    """Finish what an `--overwrite` killed part-way left in `path` (`finish_a_stopped_overwrite`), under the
    folder's lock; a live run holding the lock is left alone. Every start that reads a run folder asks."""
    if not any((path / name).exists() for name in (REPLACED_DIR, REMOVED_DIR)):
        return
    try:
        lock = RunFolderLock.acquire(path)
    except (RunFolderRefused, OSError):
        return
    try:
        finish_a_stopped_overwrite(path)
    finally:
        lock.release()


def finish_a_stopped_overwrite(path: Path) -> None:
    """A run set aside before the new one trained is put back, else removed; rank 0 says which."""
    held, removed = path / REPLACED_DIR, path / REMOVED_DIR
    said = None
    if removed.exists():
        try:
            remove_entry(removed)
        except OSError as error:
            said = f"{path}: {removed} (a replaced run) could not be removed ({describe_error(error)})"
    if held.exists():
        # Killed before its run trained: the run comes back over what the killed run wrote in its files'
        # places; nothing else beside it is taken for the killed run's.
        put_back(path)
        said = f"{path}: put back the run that an --overwrite, stopped before it trained, had set aside"
    if said is not None and global_rank() == 0:
        print(said, file=sys.stderr, flush=True)

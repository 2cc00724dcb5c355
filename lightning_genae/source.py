"""The commit of the code that measured a number: the package's version stays the same between commits."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

# The folder holding the package: a clone's root when run from one (editable installs included).
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def source_revision(root: Path = SOURCE_ROOT) -> dict[str, Any] | None:
    """The git commit of the package's code and whether tracked files differ, for a clone; else None."""
    if not (root / ".git").exists():
        return None  # a copy in site-packages: never the commit of a repository that happens to hold it
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no git, or it did not answer in time
    if commit.returncode != 0 or status.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "modified": bool(status.stdout.strip())}


@functools.cache
def current_source() -> dict[str, Any] | None:
    """`source_revision` of this process's code, asked of git once."""
    return source_revision()


def other_source_note(recorded: Any, what: str) -> str | None:
    """A note that `what` (a checkpoint) was written by another commit than this process runs, or None."""
    here = current_source()
    if not isinstance(recorded, dict) or here is None or not isinstance(recorded.get("commit"), str):
        return None
    if recorded["commit"] == here["commit"]:
        return None
    return (
        f"note: {what} was written by the code of commit {recorded['commit'][:12]}, and this is "
        f"{here['commit'][:12]}: a metric or objective either computes otherwise gives other numbers"
    )

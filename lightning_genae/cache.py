"""Where lightning-genae keeps what it computes once and reuses (classifiers, real features, augmenters),
and how it writes there so that concurrent runs never read half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """$GENAE_CACHE_DIR, else ~/.cache/lightning-genae."""
    root = os.environ.get("GENAE_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "lightning-genae"


def write_atomically(path: str | Path, write: Callable[[str], object]) -> None:
    """`write(temporary)` beside `path`, then rename it over `path`, readable by all.

    A reader (a concurrent run, an array task) sees the old file or the new one, never half of one; an
    interrupted write leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        # mkstemp creates the file private (0600); a shared cache or a shipped file must be readable by all.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)

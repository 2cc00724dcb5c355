"""What the command is called where it was typed, so that the lines it prints can be typed again as shown:
`genae` (the installed command), `python -m lightning_genae`, or `python run.py` (a clone's script)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def program_name() -> str:
    """`genae`, `python -m lightning_genae` or `run.py`: what usage lines call the command."""
    started = Path(sys.argv[0])
    if started.name == "genae":
        return "genae"
    if started.name == "__main__.py" and started.parent.name == "lightning_genae":
        return "python -m lightning_genae"
    return "run.py"


def command_prefix() -> str:
    """The command as a user types it again: `genae`, `python -m lightning_genae`, else `python run.py`."""
    name = program_name()
    return "python run.py" if name == "run.py" else name


def resume_command(run_dir: str | Path) -> str:
    """The command that continues the run in `run_dir` from its last checkpoint, as printed to type again."""
    return f"{command_prefix()} --output {shlex.quote(str(run_dir))} --resume last"

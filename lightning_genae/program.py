"""What the command is called where it was typed, so that the lines it prints can be typed again as shown:
`genae` (the installed command) or `python run.py` (a clone's script)."""

from __future__ import annotations

import sys
from pathlib import Path


def program_name() -> str:
    """`genae` when run as the installed command, else `run.py`: what usage lines call it."""
    return "genae" if Path(sys.argv[0]).name == "genae" else "run.py"


def command_prefix() -> str:
    """The command as a user types it again: `genae`, else `python run.py`."""
    return "genae" if program_name() == "genae" else "python run.py"

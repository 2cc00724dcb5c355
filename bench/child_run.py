"""Running run.py as a child of a bench script, so that stopping the script stops run.py cleanly.

Ctrl-C reaches run.py from the terminal and it stops after the iteration, saving last.ckpt; the script
ignores it meanwhile rather than kill run.py mid-save (`subprocess.run` would). A SIGTERM sent to the script
alone is passed on to run.py, which stops the same way. A run.py that fails ends the script with its exit
status and one line, not a traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys


def run_command(command: list[str]) -> int:
    """Run `command` to its end with its output discarded; return its exit status (negative: the signal
    that ended it)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    previous_interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_terminate = signal.signal(signal.SIGTERM, lambda number, frame: process.send_signal(number))
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGINT, previous_interrupt)
        signal.signal(signal.SIGTERM, previous_terminate)


def stop_on_failure(code: int, label: str) -> None:
    """Exit with `code` and one line naming `label` where the run failed; return where it succeeded."""
    if not code:
        return
    # run.py has said why on stderr (in one line where the cause is the input); a signal says nothing.
    why = f"was stopped by {signal.Signals(-code).name}" if code < 0 else f"stopped with exit status {code}"
    print(f"{label}: run.py {why}", file=sys.stderr)
    raise SystemExit(128 - code if code < 0 else code)

"""Running run.py as a child of a bench script, so that stopping the script stops run.py cleanly.

run.py runs in a process group of its own, so a terminal's Ctrl-C reaches the script alone, which passes
it on once; SIGTERM is passed on the same way. run.py then stops after the iteration, saving last.ckpt
(`subprocess.run` would kill it mid-save), and a second Ctrl-C stops it at once, as it does run alone. A
run.py that fails ends the script with its exit status and one line, not a traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from types import FrameType

PASSED_ON = (signal.SIGINT, signal.SIGTERM)


def run_command(command: list[str]) -> int:
    """Run `command` to its end with its output discarded; return its exit status (negative: the signal
    that ended it)."""
    process: subprocess.Popen | None = None
    early: list[int] = []

    def pass_on(number: int, frame: FrameType | None) -> None:
        if process is None:
            early.append(number)  # arrived while the child was being started: sent once it exists
        else:
            process.send_signal(number)

    # Installed before the child starts, so no signal falls between the two.
    previous = {number: signal.signal(number, pass_on) for number in PASSED_ON}
    try:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        for number in early:
            process.send_signal(number)
        return process.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def stop_on_failure(code: int, label: str) -> None:
    """Exit with `code` and one line naming `label` where the run failed; return where it succeeded."""
    if not code:
        return
    # run.py has said why on stderr (in one line where the cause is the input); a signal says nothing.
    if code < 0:
        why = f"was stopped by {_signal_name(-code)}"
    else:
        why = f"stopped with exit status {code}"
        if 128 < code < 128 + 65:
            why += f" ({_signal_name(code - 128)})"
    print(f"{label}: run.py {why}", file=sys.stderr)
    raise SystemExit(128 - code if code < 0 else code)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"

"""Running run.py as a child of a bench script, so that stopping the script stops run.py cleanly.

run.py runs in a process group of its own, so a terminal's Ctrl-C reaches the script alone, which passes
it on once: run.py stops after the iteration, saving last.ckpt (`subprocess.run` would kill it mid-save),
and a second Ctrl-C stops it at once, as it does run alone. SIGTERM is passed on the same way, and a hang-up
(SIGHUP, the terminal closed) as SIGTERM. Ctrl-Z pauses the script only, and a SIGKILL to the script leaves
run.py to train on to its end. A run.py that fails ends the script with its exit status and one line, not a
traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

# What the script receives -> what run.py is sent.
PASSED_ON = {signal.SIGINT: signal.SIGINT, signal.SIGTERM: signal.SIGTERM, signal.SIGHUP: signal.SIGTERM}


def run_command(command: list[str]) -> int:
    """Run `command` to its end with its output discarded; return its exit status (negative: the signal
    that ended it)."""
    process: subprocess.Popen | None = None
    held: list[int] = []

    def pass_on(number: int, frame: FrameType | None) -> None:
        if process is None or process.poll() is not None:
            held.append(number)  # no run.py to stop: this script stops instead, once run.py is done
        else:
            process.send_signal(PASSED_ON[number])

    # Installed before the child starts, so no signal falls between the two.
    previous = {number: signal.signal(number, pass_on) for number in PASSED_ON}
    try:
        if not held:
            # A group of its own, not a new session: the child keeps the terminal.
            own_group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, **own_group)
            code = _wait(process)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if held:
        # Sent before run.py started or after it ended: the script itself stops, as it would have.
        signal.raise_signal(held[0])
        return -held[0]
    return code


def _wait(process: subprocess.Popen) -> int:
    """`process.wait()`, while this process keeps answering signals. A signal may be delivered to any of its
    threads (torch's among them), and Python runs the handler in the main thread only when that thread runs
    Python code: blocked in one waitpid, it would pass Ctrl-C on only once run.py had ended. Waiting with a
    timeout polls in Python, so the handler runs within a fraction of a second."""
    while True:
        try:
            return process.wait(timeout=3600)
        except subprocess.TimeoutExpired:
            continue


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

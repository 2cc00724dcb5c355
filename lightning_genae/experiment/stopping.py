"""Stop signals (Ctrl-C, SIGTERM, SLURM's SIGUSR1) outside the training iterations StopOnSignal watches:
each stops at once with 128 + the signal and one line saying how to go on."""

from __future__ import annotations

import shlex
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from lightning_genae.callbacks.stopping import STOP_SIGNALS
from lightning_genae.cluster import interrupted_by
from lightning_genae.experiment.program import command_prefix, resume_command


@contextmanager
def _stopping_on_signals(stop: Callable[[], tuple[str, str] | None]) -> Iterator[None]:
    """Within: a stop signal gives Python's handlers back, then ends with 128 + the signal and the line
    "stopped by SIGINT {when}; {advice}" of `stop()`, or (None) does what Python's handler does. Signal
    handlers belong to the main thread: a run in another thread keeps Python's own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def restore() -> None:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)

    def handle(signum: int, frame: FrameType | None) -> None:
        restore()
        if (said := stop()) is None:
            signal.raise_signal(signum)
            return
        raise interrupted_by(signum, f"stopped by {signal.Signals(signum).name} {said[0]}", said[1])

    previous = {stop_signal: signal.signal(stop_signal, handle) for stop_signal in STOP_SIGNALS}
    try:
        yield
    finally:
        restore()


def stop_outside_training(
    run_dir: Path, progress: Any, undo: Callable[[], None], resuming: bool = False
) -> AbstractContextManager[None]:
    """A stop signal while the run sets up or before its final evaluation: before training the folder is put
    back first (`undo`), after it `--resume last` continues (`progress`: its `started` and `finished`)."""

    def stop() -> tuple[str, str] | None:
        resume = f"continue with: {resume_command(run_dir)}"
        if progress.finished:
            return None  # the run is done: what the signal does is Python's again
        if progress.started:
            return "after training, before the final evaluation", resume
        undo()  # before a requeue can end this process
        if resuming:
            return "before training resumed", resume
        return "before training started; nothing of the run was kept", "start it again"

    return _stopping_on_signals(stop)


def stop_at_once_on_signal(where: str, advice: str) -> AbstractContextManager[None]:
    """SIGINT, SIGTERM or SIGUSR1 stop what runs inside at once, with 128 + the signal and one line: "stopped
    by SIGINT {where}; {advice}" (inside a Trainer call, Lightning would turn Ctrl-C into exit 1)."""
    return _stopping_on_signals(lambda: (where, advice))


def stop_during_final_evaluation(run_dir: Path) -> AbstractContextManager[None]:
    """A stop signal during the final evaluation: the weights are in last.ckpt; `--resume last` runs it."""
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    return stop_at_once_on_signal(
        f"during the final evaluation; the trained weights are in {last}",
        f"finish the run (summary.json) with: {resume_command(run_dir)}, or score them with: "
        f"{command_prefix()} --evaluate {shlex.quote(str(last))}",
    )

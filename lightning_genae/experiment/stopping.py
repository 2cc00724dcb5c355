"""Stopping a run on a signal: Ctrl-C, SIGTERM, or SLURM's warning signal before the time limit ends training
at an iteration boundary that every rank agrees on, with `last.ckpt` saved (`StopOnSignal`); and the
Trainer's cluster environment, which leaves the stopping and requeueing to it (`cluster_plugins`).
"""

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
def stop_outside_training(
    run_dir: Path, progress: Any, undo: Callable[[], None], resuming: bool = False
) -> Iterator[None]:
    """SIGTERM, SLURM's SIGUSR1 or Ctrl-C outside the iterations StopOnSignal watches: while the run sets
    up (a classifier trained on first use, the data's loading, the start of a job's processes) or between
    its training and its final evaluation. Python's default ends the process at once (or, for Ctrl-C, with
    a KeyboardInterrupt's traceback), leaving a run folder that holds config.yaml and nothing to resume, which
    a requeued job finds taken. Here they stop the run with 128 + the signal and one line: before training
    the folder is put back first (a new run keeps nothing, so a requeued job starts afresh; a resumed one is
    as it was), after it `--resume last` continues. `progress` says how far the run is (`started`: a
    training batch ran; `finished`: summary.json is written, after which the signals are Python's own
    again). A handler runs between Python's steps: a process blocked in a C++ call (a rendezvous waiting
    for the job's other processes) takes the signal when that call returns, or SLURM's SIGKILL after its
    grace period ends it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a run in another thread keeps Python's own
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
        if progress.finished:
            signal.raise_signal(signum)  # the run is done: what the signal does is Python's again
            return
        name = signal.Signals(signum).name
        resume = f"continue with: {resume_command(run_dir)}"
        if not progress.started:
            undo()  # before a requeue can end this process
            if resuming:
                raise interrupted_by(signum, f"stopped by {name} before training resumed", resume)
            raise interrupted_by(
                signum,
                f"stopped by {name} before training started; nothing of the run was kept",
                "start it again",
            )
        raise interrupted_by(signum, f"stopped by {name} after training, before the final evaluation", resume)

    previous = {stop_signal: signal.signal(stop_signal, interrupt) for stop_signal in STOP_SIGNALS}
    try:
        yield
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)


@contextmanager
def stop_at_once_on_signal(where: str, advice: str) -> Iterator[None]:
    """SIGINT, SIGTERM or SIGUSR1 stop what runs inside at once, with 128 + the signal and one line: "stopped
    by SIGINT {where}; {advice}". Inside a Trainer call, Lightning would turn Ctrl-C into exit 1 (a failed
    cell, to a grid) and ignore every Ctrl-C after it; SIGTERM would end the process without a word."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a run in another thread keeps Python's own
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
        raise interrupted_by(signum, f"stopped by {signal.Signals(signum).name} {where}", advice)

    previous = {stop_signal: signal.signal(stop_signal, interrupt) for stop_signal in STOP_SIGNALS}
    try:
        yield
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)


def stop_during_final_evaluation(run_dir: Path) -> AbstractContextManager[None]:
    """A stop signal once training is over, while the run evaluates its final weights: the trained weights
    are already in last.ckpt, and `--resume last` of a run without its summary.json runs the final
    evaluation alone (`stop_at_once_on_signal`)."""
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    return stop_at_once_on_signal(
        f"during the final evaluation; the trained weights are in {last}",
        f"finish the run (summary.json) with: {resume_command(run_dir)}, or score them with: "
        f"{command_prefix()} --evaluate {shlex.quote(str(last))}",
    )

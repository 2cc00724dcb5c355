"""What the reproduction scripts share: their checks of the command line, and their run.py runs, planned
before any trains and picked up again by the same command after a stop.

A script's run goes into a folder of its own, beside a record of the run.py command that started it
(`bench-command.json`, written before the run starts). Run again, the same command finds each run as it
left it: a finished one (its summary.json at the asked budget) is scored as it is, a stopped one continues
from its last.ckpt (run.py's `--resume last`), and one stopped before its first checkpoint starts again. A
folder holding a run of another command, or one this script did not start, is refused in one line before
anything trains: the script never replaces a run it was not asked to. `--extend` adds its command to the
record, so the run it makes is never taken for one trained from the start with the extension's options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from child_run import run_command, stop_on_failure

from lightning_genae.errors import GenaeError
from lightning_genae.experiment.run_folder import read_summary
from lightning_genae.run_files import last_checkpoint, started_run_files

STAMP = "bench-command.json"


def read_stamp(output: Path) -> list[list[str]] | None:
    """The run.py options that made `output`'s run, oldest first (the command that started it, then each
    --extend), from its bench-command.json; None where there is none or it is not one."""
    try:
        record = json.loads((output / STAMP).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if isinstance(record, list) and record and all(isinstance(item, str) for item in record):
        record = [record]  # one command, as a record of an earlier version holds it
    if not isinstance(record, list) or not record:
        return None
    history = []
    for options in record:
        if not isinstance(options, list) or not all(isinstance(item, str) for item in options):
            return None
        history.append(options[1:] if options[:1] == ["run.py"] else options)
    return history


def _write_stamp(output: Path, history: list[list[str]] | None, *, new: bool = False) -> None:
    """Record `history` (None: no record) in one step: a stop mid-write leaves the old record or the new.
    `new`: the folder had no record, and one made meanwhile (another command starting there at the same
    moment) is not replaced: FileExistsError."""
    stamp = output / STAMP
    if history is None:
        stamp.unlink(missing_ok=True)
        return
    partial = stamp.with_name(f".{STAMP}.{os.getpid()}.partial")
    partial.write_text(json.dumps(history))
    try:
        if new:
            os.link(partial, stamp)  # fails where the record exists
        else:
            partial.replace(stamp)
    finally:
        partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class PlannedRun:
    """One run.py run of a script: its options (without the interpreter), its folder and its budget.
    `extend`: continue the run already in the folder to `steps` (a longer budget of the same run)."""

    options: list[str]
    output: Path
    steps: int
    extend: bool = False

    def _finished(self) -> bool:
        summary = read_summary(self.output)
        return summary is not None and summary.get("global_step") == self.steps

    def start(self) -> tuple[str, list[str], list[list[str]] | None]:
        """How the run is had ("reuse", "resume", "restart" or "train"), the run.py options that do it, and
        the record its folder holds once it starts; a problem raises ValueError with its line."""
        if self.output.exists() and not self.output.is_dir():
            raise ValueError(f"--output: {self.output} is a file, not a folder; pick another --output")
        history = read_stamp(self.output)
        has_checkpoint = last_checkpoint(self.output).is_file()
        resume = [*self.options, "--resume", "last"]
        if self.extend:
            if not has_checkpoint:
                raise ValueError(
                    f"--extend: {self.output} holds no checkpoints/last.ckpt to continue; drop --extend"
                )
            if history is None:
                raise ValueError(
                    f"--extend: {self.output} holds a run this script did not start; continue it with run.py "
                    "--resume last, or pick the --output of this script's runs"
                )
            if history[-1] == self.options:  # this extension, finished or stopped
                return ("reuse", [], history) if self._finished() else ("resume", resume, history)
            return "resume", resume, [*history, self.options]
        if history is not None:
            if history != [self.options]:
                what = "extended by --extend since" if history[0] == self.options else "of another command"
                raise ValueError(
                    f"{self.output} holds a run {what} (its {STAMP}); pick another --output, or remove "
                    f"{self.output}"
                )
            if self._finished():
                return "reuse", [], history
            if has_checkpoint:
                return "resume", resume, history
            if started_run_files(self.output):
                # Stopped before its first checkpoint: nothing to continue, so it begins again.
                return "restart", [*self.options, "--overwrite"], history
            return "train", self.options, history
        if started_run_files(self.output):
            raise ValueError(
                f"{self.output} holds a run this script did not start; pick another --output, or remove "
                f"{self.output}"
            )
        return "train", self.options, [self.options]


def check_planned(parser: argparse.ArgumentParser, runs: Sequence[PlannedRun]) -> None:
    """Every run's folder checked before any run trains (a refusal at the last seed would come hours in)."""
    for run in runs:
        try:
            run.start()
        except ValueError as problem:
            parser.error(str(problem))


def _run_files_state(output: Path) -> dict[str, tuple[int, int]]:
    """What a run has written in `output` (its run files and last.ckpt), by size and modification time."""
    names = [*started_run_files(output), "checkpoints/last.ckpt"]
    state = {}
    for name in names:
        try:
            found = (output / name).stat()
        except OSError:
            continue
        state[name] = (found.st_size, found.st_mtime_ns)
    return state


def train_planned(run: PlannedRun, label: str) -> Path:
    """Have `run` (train, continue or reuse it, as `PlannedRun.start` says) and return its folder; a run.py
    that fails ends the script with its status and one line naming `label`.

    The record is written before run.py starts (a stop in between must find it). Where run.py then writes
    nothing (it refused the run: another run holds the folder, or the options), the record is put back as
    it was, so a refused command never takes the folder's run for its own."""
    try:
        how, options, history = run.start()
    except ValueError as problem:
        print(problem, file=sys.stderr)
        raise SystemExit(2) from None
    if how == "reuse":
        print(f"  {label}: reusing {run.output} (this command's run, finished at {run.steps})", flush=True)
        return run.output
    described = {"resume": "continuing its last.ckpt", "restart": "starting again", "train": "training"}
    print(f"  {label}: {described[how]}: run.py {' '.join(options)}", flush=True)
    try:
        run.output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        why = error.strerror or type(error).__name__
        print(f"--output: {run.output} cannot be made ({why}); pick another --output", file=sys.stderr)
        raise SystemExit(2) from None
    had_record = (run.output / STAMP).exists()
    before = read_stamp(run.output)
    state = _run_files_state(run.output)
    try:
        if history != before:
            # A record where none was is made only if none is made meanwhile (another command, started
            # at the same moment); an unreadable one is replaced.
            _write_stamp(run.output, history, new=not had_record)
    except FileExistsError:
        print(
            f"{run.output}: another command started a run there meanwhile; pick another --output",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    except OSError as error:
        why = error.strerror or type(error).__name__
        print(f"--output: {run.output} cannot be written ({why}); pick another --output", file=sys.stderr)
        raise SystemExit(2) from None
    started = time.time()
    code = run_command([sys.executable, "run.py", *options])
    if (
        code
        and history != before
        and _run_files_state(run.output) == state
        and read_stamp(run.output) == history
    ):
        _write_stamp(run.output, before)  # nothing of this run was written: the record stays the folder's
    stop_on_failure(code, label)
    print(f"  {label}: done in {time.time() - started:.0f} s", flush=True)
    return run.output


def distinct(parser: argparse.ArgumentParser, values: Sequence[object], flag: str) -> None:
    """Refuse a repeated value (`--seeds 0 0`): one run scored twice would count as two, with no spread."""
    if not values:
        parser.error(f"{flag} is empty; give at least one value")
    repeated = sorted({str(value) for value in values if list(values).count(value) > 1})
    if repeated:
        parser.error(f"{flag} lists {', '.join(repeated)} more than once; give each once")


def names(parser: argparse.ArgumentParser, text: str, known: Sequence[str] | None, flag: str) -> list[str]:
    """A comma list of names, each known (when `known` is given) and given once; checked before any run."""
    listed = [name.strip() for name in text.split(",")]
    if any(not name for name in listed):
        parser.error(f"{flag} {text!r} has an empty name; give names separated by single commas")
    unknown = [name for name in listed if known is not None and name not in known]
    if unknown:
        parser.error(f"{flag}: {', '.join(unknown)} unknown; choose from {', '.join(known or [])}")
    distinct(parser, listed, flag)
    return listed


def device(parser: argparse.ArgumentParser, name: str) -> torch.device:
    """`--device auto|cpu|cuda` as a torch device; cuda where none is visible is refused in one line."""
    if name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is visible here; use --device cpu (or auto)")
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def prepared(parser: argparse.ArgumentParser, datamodule: object) -> None:
    """The data read (or downloaded) and set up before anything trains; missing or unreadable data is one
    line."""
    readable(parser, datamodule)
    try:
        datamodule.setup("fit")  # type: ignore[attr-defined]
    except GenaeError as error:
        parser.error(str(error))


def readable(parser: argparse.ArgumentParser, datamodule: object) -> None:
    """The data's files there (or downloaded) before anything trains; missing or unreadable is one line."""
    try:
        datamodule.prepare_data()  # type: ignore[attr-defined]
    except GenaeError as error:
        parser.error(str(error))

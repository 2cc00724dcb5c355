"""What the reproduction scripts share: their checks of the command line, and their run.py runs, planned
before any trains and picked up again by the same command after a stop.

A script's run goes into a folder of its own, beside a record of the run.py command that started it
(`bench-command.json`, written before the run starts). Run again, the same command finds each run as it
left it: a finished one (its summary.json at the asked budget) is scored as it is, a stopped one continues
from its last.ckpt (run.py's `--resume last`), and one stopped before its first checkpoint starts again. A
folder holding a run of another command, or one this script did not start, is refused in one line before
anything trains: the script never replaces a run it was not asked to.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from child_run import run_command, stop_on_failure

from lightning_genae.checkpoint import last_checkpoint
from lightning_genae.errors import GenaeError
from lightning_genae.run_folder import started_run_files

STAMP = "bench-command.json"


@dataclass(frozen=True)
class PlannedRun:
    """One run.py run of a script: its options (without the interpreter), its folder and its budget.
    `extend`: continue the run already in the folder to `steps` (a longer budget of the same run)."""

    options: list[str]
    output: Path
    steps: int
    extend: bool = False

    def _stamped(self) -> bool:
        stamp = self.output / STAMP
        try:
            return stamp.is_file() and json.loads(stamp.read_text()) == self.options
        except (OSError, ValueError):
            return False

    def _finished(self) -> bool:
        try:
            summary = json.loads((self.output / "summary.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(summary, dict) and summary.get("global_step") == self.steps

    def start(self) -> tuple[str, list[str]]:
        """How the run is had ("reuse", "resume", "restart" or "train") and the run.py options that do it;
        a problem raises ValueError with its line."""
        has_checkpoint = last_checkpoint(self.output).is_file()
        if self.extend:
            if not has_checkpoint:
                raise ValueError(
                    f"--extend: {self.output} holds no checkpoints/last.ckpt to continue; drop --extend"
                )
            if self._stamped() and self._finished():
                return "reuse", []
            return "resume", [*self.options, "--resume", "last"]
        if self._stamped():
            if self._finished():
                return "reuse", []
            if has_checkpoint:
                return "resume", [*self.options, "--resume", "last"]
            if started_run_files(self.output):
                # Stopped before its first checkpoint: nothing to continue, so it begins again.
                return "restart", [*self.options, "--overwrite"]
            return "train", self.options
        if started_run_files(self.output):
            raise ValueError(
                f"{self.output} holds a run this command did not start (another command's, or one run apart "
                f"from this script); pick another --output, or remove {self.output}"
            )
        return "train", self.options


def check_planned(parser: argparse.ArgumentParser, runs: Sequence[PlannedRun]) -> None:
    """Every run's folder checked before any run trains (a refusal at the last seed would come hours in)."""
    for run in runs:
        try:
            run.start()
        except ValueError as problem:
            parser.error(str(problem))


def train_planned(run: PlannedRun, label: str) -> Path:
    """Have `run` (train, continue or reuse it, as `PlannedRun.start` says) and return its folder; a run.py
    that fails ends the script with its status and one line naming `label`."""
    try:
        how, options = run.start()
    except ValueError as problem:
        print(problem, file=sys.stderr)
        raise SystemExit(2) from None
    if how == "reuse":
        print(f"  {label}: reusing {run.output} (this command's run, finished at {run.steps})", flush=True)
        return run.output
    described = {"resume": "continuing its last.ckpt", "restart": "starting again", "train": "training"}
    print(f"  {label}: {described[how]}: run.py {' '.join(run.options)}", flush=True)
    run.output.mkdir(parents=True, exist_ok=True)
    (run.output / STAMP).write_text(json.dumps(run.options))
    started = time.time()
    stop_on_failure(run_command([sys.executable, "run.py", *options]), label)
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
    """The data read (or downloaded) before anything trains; missing or unreadable data is one line."""
    try:
        datamodule.prepare_data()  # type: ignore[attr-defined]
        datamodule.setup("fit")  # type: ignore[attr-defined]
    except GenaeError as error:
        parser.error(str(error))

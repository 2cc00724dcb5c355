"""Running a grid's cells, each started as its folder says (`_how_to_start`): a cell that fails leaves
failed.json and the grid goes on; Ctrl-C or a stop signal stops the grid."""

from __future__ import annotations

import json
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from lightning_genae.cache import write_file_atomically
from lightning_genae.cluster import interrupted_by, take_noted_signal
from lightning_genae.errors import RunFolderRefused, describe_error
from lightning_genae.experiment.ablation.cells import GridCell, overwrite_pending, set_overwrite_pending
from lightning_genae.experiment.ablation.conflicts import (
    budget_changes,
    cell_conflicts,
    other_options,
    summary_config,
)
from lightning_genae.experiment.config import RunConfig
from lightning_genae.experiment.overwrite import put_back_a_stopped_overwrite
from lightning_genae.experiment.run_folder import read_summary
from lightning_genae.experiment.run_lock import LOCK_FILE, live_lock_owner
from lightning_genae.run_files import CHECKPOINT_DIR, FAILED_FILE, started_run_files


class CellStart(Enum):
    """How a cell is started, decided from what its folder holds."""

    FRESH = "ran"
    RESUME = "resumed"  # unfinished, or finished and asked for a longer budget: from its last.ckpt
    RESTART = "restarted"  # failed, started without a checkpoint, or --overwrite: its old files are replaced


@dataclass(frozen=True)
class CellOutcome:
    """What one cell gave; `action`: `ran`, `resumed`, `restarted`, `skipped`, `in use` or `refused`."""

    cell: GridCell
    run_dir: Path
    ok: bool
    error: str | None = None
    action: str = "ran"


def _how_to_start(run_dir: Path, overwrite: bool, config: RunConfig | None) -> tuple[CellStart | str, str]:
    """How to start the cell, or why to leave it (`skipped`, `in use`, `refused`: a run of other options is
    never replaced unasked), and what to say."""
    put_back_a_stopped_overwrite(run_dir)
    owner = live_lock_owner(run_dir)
    if owner is not None:
        gone = f"if that run is gone: rm {run_dir / LOCK_FILE}"
        return "in use", f"in use by another run ({owner}), left to it ({gone})"
    if overwrite:
        from lightning_genae.experiment.resume import earlier_attempt_wrote

        if earlier_attempt_wrote(run_dir) != "own":
            return (CellStart.RESTART if run_dir.exists() else CellStart.FRESH), "starting over (--overwrite)"
    if (run_dir / FAILED_FILE).is_file():
        return CellStart.RESTART, "failed before, running it again from scratch"
    conflicts = cell_conflicts(run_dir, config) if config is not None else []
    if conflicts:
        return "refused", other_options(run_dir, conflicts)
    summary = read_summary(run_dir)
    if summary is not None:
        step = summary.get("global_step", "?")
        if config is not None and budget_changes(summary_config(summary), config.to_dict()):
            return CellStart.RESUME, f"finished at step {step}, continuing to the new budget"
        return "skipped", f"finished (step {step}), skipped"
    if (run_dir / CHECKPOINT_DIR / "last.ckpt").is_file():
        return CellStart.RESUME, "unfinished, resuming from its last.ckpt"
    if started_run_files(run_dir):
        return CellStart.RESTART, "started but never checkpointed, running it again from scratch"
    return CellStart.FRESH, ""


def run_grid(
    cells: Sequence[GridCell],
    root: Path,
    run_cell: Callable[[GridCell, Path, CellStart], object],
    grid_index: int | None = None,
    *,
    overwrite: bool = False,
    configs: Mapping[GridCell, RunConfig] | None = None,
) -> list[CellOutcome]:
    """Run every cell (or only `cells[grid_index]`) in `root/<name>`; a failing cell does not stop others.
    An --overwrite of the whole grid notes in grid.json the cells it has yet to replace."""
    root = Path(root)
    selected = list(enumerate(cells)) if grid_index is None else [(grid_index, cells[grid_index])]
    pending = overwrite_pending(root)
    if overwrite and grid_index is None:
        from lightning_genae.experiment.resume import earlier_attempt_wrote

        # A requeued job's earlier attempt already replaced the cells it wrote: they are not old runs.
        pending += [
            cell.name
            for cell in cells
            if cell.name not in pending and earlier_attempt_wrote(root / cell.name) != "own"
        ]
        set_overwrite_pending(root, pending)
    outcomes = []
    for index, cell in selected:
        label = f"[{index + 1}/{len(cells)}] {cell.name}"
        outcome = _run_cell(
            cell, root / cell.name, label, run_cell, overwrite or cell.name in pending, configs
        )
        outcomes.append(outcome)
        if cell.name in pending and outcome.action in ("ran", "resumed", "restarted"):
            pending.remove(cell.name)  # finished, or failed (its failed.json starts it over): not the old run
            set_overwrite_pending(root, pending)
        noted = take_noted_signal()
        if outcome.ok and noted is not None and (index, cell) != selected[-1]:
            raise interrupted_by(
                noted,
                f"stopped by {signal.Signals(noted).name}: {label} finished (the signal came in its last "
                "iteration)",
                "run the grid command again to go on with the other cells",
            )
    return outcomes


def _run_cell(
    cell: GridCell,
    run_dir: Path,
    label: str,
    run_cell: Callable[[GridCell, Path, CellStart], object],
    overwrite: bool,
    configs: Mapping[GridCell, RunConfig] | None,
) -> CellOutcome:
    start, says = _how_to_start(run_dir, overwrite, (configs or {}).get(cell))
    if start == "refused":
        print(f"{label} refused: {says}", file=sys.stderr, flush=True)
        return CellOutcome(cell, run_dir, ok=False, error=says, action="refused")
    if not isinstance(start, CellStart):
        print(f"{label}: {says}", flush=True)
        return CellOutcome(cell, run_dir, ok=True, action=start)
    print(f"{label}: {says} ..." if says else f"{label} ...", flush=True)
    take_noted_signal()  # a signal a run noted before this cell is not this cell's
    try:
        run_cell(cell, run_dir, start)
    except RunFolderRefused as refused:
        # Not the cell's failure: its folder is another run's; a failed.json would let a re-run replace it.
        print(f"{label} refused: {refused}", file=sys.stderr, flush=True)
        return CellOutcome(cell, run_dir, ok=False, error=str(refused), action="refused")
    except Exception as error:  # noqa: BLE001 - one broken cell must not cost the rest of the grid
        return _failed(cell, run_dir, label, start, error)
    # KeyboardInterrupt and a stop signal's RunInterrupted are not caught: they stop the whole grid.
    (run_dir / FAILED_FILE).unlink(missing_ok=True)
    return CellOutcome(cell, run_dir, ok=True, action=start.value)


def _failed(cell: GridCell, run_dir: Path, label: str, start: CellStart, error: Exception) -> CellOutcome:
    """A failed cell's failed.json (its next grid command runs it again), unless it holds a finished run."""
    message = describe_error(error)
    if start is not CellStart.FRESH and read_summary(run_dir) is not None:
        print(f"{label} FAILED: {message} (the cell's finished run is kept)", file=sys.stderr, flush=True)
        return CellOutcome(cell, run_dir, ok=False, error=message, action=start.value)
    record = {"cell": cell.name, **{key: getattr(cell, key) for key in ("augment", "train_size", "seed")}}
    record["error"] = message
    record["traceback"] = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    write_file_atomically(run_dir / FAILED_FILE, json.dumps(record, indent=2) + "\n")
    print(f"{label} FAILED: {message} (details in {run_dir / FAILED_FILE})", file=sys.stderr, flush=True)
    return CellOutcome(cell, run_dir, ok=False, error=message, action=start.value)

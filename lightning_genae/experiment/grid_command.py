"""The grid command: `run.py` with lists of augmentations, train sizes, seeds or candidates (Lightning is
imported once a grid trains); a failing cell leaves failed.json, the grid goes on; a stop signal ends it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_genae.cache import write_file_atomically
from lightning_genae.cluster import interrupted_by, take_noted_signal
from lightning_genae.errors import ConfigError, RunFolderRefused, describe_error
from lightning_genae.experiment.ablation.cells import GridCell, overwrite_pending, set_overwrite_pending
from lightning_genae.experiment.ablation.conflicts import (
    budget_changes,
    cell_conflicts,
    other_options,
    summary_config,
)
from lightning_genae.experiment.config import NO_BACKBONE, RunConfig
from lightning_genae.experiment.overwrite import put_back_a_stopped_overwrite
from lightning_genae.experiment.program import command_prefix
from lightning_genae.experiment.resolve import (
    ResolvedRun,
    check_shape_options,
    refuse_a_folder_among_the_data,
    refuse_named_but_unread,
    stated_world_size,
)
from lightning_genae.experiment.run_folder import read_summary
from lightning_genae.experiment.run_lock import LOCK_FILE, live_lock_owner
from lightning_genae.run_files import CHECKPOINT_DIR, FAILED_FILE, started_run_files

if TYPE_CHECKING:
    from lightning_genae.experiment.ablation.cells import GridPlan
    from lightning_genae.experiment.ablation.tuning import TuningPlan


def run_grid_command(
    values: dict[str, Any],
    augments: list[str] | None,
    train_sizes: list[int | None] | None,
    seeds: list[int] | None,
    grid_index: int | None,
    print_config: bool,
    tuning_request: tuple[dict[str, list[Any]], list[int]] | None = None,
    named: Collection[str] = (),
) -> int:
    """Every cell as its own run under --output ROOT, tuning cells first, then the summary files."""
    from lightning_genae.experiment.ablation.cells import check_grid_root, plan_grid
    from lightning_genae.experiment.ablation.tuning import plan_tuning

    shared = RunConfig.from_dict(values)
    given_seeds = f"--seed {values.get('seed')} and --seeds {','.join(map(str, seeds or []))}"
    # What a grid cannot take. A config file's seed (a run's config.yaml) is not named: --seeds wins over it.
    refusals = {
        f"{given_seeds} both give the grid's seeds; drop --seed and list every seed in --seeds": (
            seeds is not None and "seed" in named
        ),
        "--no-test-split: a grid's tables compare its arms on the test split; drop it": not shared.test_split,
        "--resume does not apply to a grid; give the grid's command again to continue it": (
            shared.resume is not None
        ),
        "--fast-dev-run does not apply to a grid": bool(shared.fast_dev_run),
        "--grid-index needs --output ROOT, the folder all array tasks share": (
            grid_index is not None and not shared.output
        ),
    }
    refused = next((message for message, applies in refusals.items() if applies), None)
    if refused is not None:
        raise ConfigError(refused)
    candidates, tune_seeds = tuning_request or ({}, [])
    plan = plan_grid(shared, augments=augments, train_sizes=train_sizes, seeds=seeds, candidates=candidates)
    tuning = plan_tuning(shared, plan, candidates, tune_seeds) if tuning_request is not None else None
    tuning_cells = len(tuning.cells) if tuning is not None else 0
    total = tuning_cells + len(plan.cells)
    if grid_index is not None and not 0 <= grid_index < total:
        tuning_note = f" (tuning cells 0..{tuning_cells - 1}, then the final cells)" if tuning_cells else ""
        raise ConfigError(
            f"--grid-index {grid_index} is out of range; this grid has {total} cells{tuning_note}, so pass "
            f"0..{total - 1}"
        )
    # The cells share their family's and data options: one check stands for all.
    first = next(iter(plan.runs.values()))
    refuse_named_but_unread(first, named)
    check_shape_options(first)
    if print_config:
        print(_grid_configs(plan, tuning, grid_index), end="", flush=True)
        return 0
    from lightning_genae.cluster import current_job

    # Lightning starts a cell's other processes itself once per process: the second cell would fail or hang.
    processes = stated_world_size(shared)
    if grid_index is None and processes > 1 and current_job() is None and "LOCAL_RANK" not in os.environ:
        raise ConfigError(
            f"a grid on {processes} processes (--devices {shared.devices}) needs srun or torchrun around it "
            "(scripts/slurm/ablation.sbatch), or run each cell alone with --grid-index I"
        )
    refuse_a_folder_among_the_data(first.config, plan.root)
    check_grid_root(plan.root)
    from lightning_genae.progress import quiet_lightning

    quiet_lightning()
    _refuse_a_grid_without_its_metrics(first, tuning=tuning is not None)
    return _train_grid(shared, plan, tuning, grid_index, overwrite=bool(values.get("overwrite")))


def _refuse_a_grid_without_its_metrics(resolved: ResolvedRun, tuning: bool) -> None:
    """Refuse, before the first cell trains unscored, a grid of a family judged on the image metrics (no
    objective of its own, and for a plain grid none that reconstructs) where every cell would skip them."""
    family, config = resolved.model.module, resolved.config
    if getattr(family, "monitor", None) is not None or not callable(getattr(family, "sample", None)):
        return
    if (callable(getattr(family, "reconstruct", None)) and not tuning) or config.backbone == "inception":
        return
    if config.classifier_weights is not None:
        return
    datamodule = resolved.build_datamodule()
    if datamodule.data_kind != "image":
        return
    why = "a tuning grid chooses each arm's candidate on" if tuning else "a grid compares its arms on"
    why += " the validation image metrics" if tuning else " the image metrics"
    if config.backbone == NO_BACKBONE:
        raise ConfigError(f"--backbone none skips the image metrics, and {why}; drop --backbone none")
    from lightning_genae.metrics.backbones import BackboneUnavailable, check_classifier_trainable

    try:
        check_classifier_trainable(config.data, datamodule)
    except BackboneUnavailable as error:
        raise BackboneUnavailable(f"{error} ({why})") from error


def _grid_configs(plan: GridPlan, tuning: TuningPlan | None, grid_index: int | None = None) -> str:
    """--print-config of a grid: each cell's configuration (or --grid-index's), tuning cells first."""
    cells = [(f"{tuning.folder.name}/{c.name}", tuning.runs[c], 1) for c in tuning.cells] if tuning else []
    cells += [(c.name, plan.runs[c], len(tuning.arm_of(c).candidates) if tuning else 1) for c in plan.cells]
    parts = []
    for index, (name, resolved, candidates) in enumerate(cells):
        if grid_index not in (None, index):
            continue
        if candidates > 1:
            runs = f"the best of its {candidates} candidates on validation, once its tuning cells have run"
            parts.append(f"# cell {index}: {name} (runs {runs})\n")
        else:
            parts.append(
                f"# cell {index}: {name}\n{resolved.config.with_absolute_paths().experiment().to_yaml()}"
            )
    return "".join(parts)


def _cell_runner(
    runs: dict[GridCell, ResolvedRun], overwrite: bool
) -> Callable[[GridCell, Path, CellStart], None]:
    """How a grid trains a cell: fresh, resumed, or over its old files; `runs` is read as it starts."""
    from lightning_genae.experiment.ablation.conflicts import unfinished_run_conflicts
    from lightning_genae.experiment.resume import to_resume
    from lightning_genae.experiment.train import run

    def run_cell(cell: GridCell, run_dir: Path, start: CellStart) -> None:
        resolved, resume = runs[cell], None
        if start is CellStart.RESUME:
            resolved = replace(resolved, config=replace(resolved.config, overwrite=False))
            resume = to_resume("last", str(run_dir))
            # An unfinished cell was compared by its config.yaml; the options its checkpoint holds decide.
            if read_summary(run_dir) is None and (
                conflicts := unfinished_run_conflicts(resume.stored_config("--resume"), resolved.config)
            ):
                raise RunFolderRefused(other_options(run_dir, conflicts))
        elif start is CellStart.RESTART:
            resolved = replace(resolved, config=replace(resolved.config, overwrite=True))
        replacing = "--overwrite" if overwrite else "running the cell again from scratch"
        run(resolved, resume=resume, brief=True, replacing=replacing)

    return run_cell


def _train_grid(
    shared: RunConfig, plan: GridPlan, tuning: TuningPlan | None, grid_index: int | None, overwrite: bool
) -> int:
    """Run the cells (or `grid_index`'s): tuning ones, then the arms' final ones; 1 if any failed or waits."""
    from lightning_genae.experiment.ablation import summarize
    from lightning_genae.experiment.ablation.cells import record_grid_cells
    from lightning_genae.experiment.ablation.conflicts import refuse_finished_runs_with_other_options
    from lightning_genae.experiment.ablation.runs import describe_progress
    from lightning_genae.experiment.ablation.tuning import choose, final_cells, write_tuning_record

    tuning_cells = tuning.cells if tuning is not None else []
    runs = {**plan.runs, **(tuning.runs if tuning is not None else {})}
    # Every cell whose options are known now, whichever --grid-index runs (tuned arms' final cells later).
    known = [
        (plan.root / c.name, plan.runs[c].config)
        for c in plan.cells
        if tuning is None or len(tuning.arm_of(c).candidates) < 2
    ]
    known += [(tuning.folder / c.name, runs[c].config) for c in tuning_cells]
    refuse_finished_runs_with_other_options(known, overwrite)
    run_cell = _cell_runner(runs, overwrite)
    seeds = sorted({cell.seed for cell in plan.cells})
    outcomes: list[CellOutcome] = []
    if tuning is not None and (grid_index is None or grid_index < len(tuning_cells)):
        plan.root.mkdir(parents=True, exist_ok=True)
        record_grid_cells(plan.root, plan.cells)  # before tuning.json: the root is a grid's
        tuning.folder.mkdir(exist_ok=True)
        record_grid_cells(tuning.folder, tuning_cells)
        configs = {cell: resolved.config for cell, resolved in tuning.runs.items()}
        outcomes = run_grid(
            tuning_cells, tuning.folder, run_cell, grid_index, overwrite=overwrite, configs=configs
        )
        print(f"tuning: {describe_progress(tuning.folder)}")
        if grid_index is not None:
            write_tuning_record(tuning, choose(tuning), seeds)
            last = len(tuning_cells) - 1
            print(f"tuning cell {grid_index} done; once cells 0..{last} have run, run the final cells")
            return int(not all(outcome.ok for outcome in outcomes))
    cells, index, waiting = plan.cells, grid_index, {}
    if tuning is not None:
        choices = choose(tuning)
        cells, chosen_runs, waiting = final_cells(shared, plan, choices)
        runs.update(chosen_runs)
        index = None if grid_index is None else grid_index - len(tuning_cells)
        if index is not None and cells[index].name in waiting:
            raise ConfigError(
                f"--grid-index {grid_index} is the final cell {cells[index].name}, whose arm cannot run: "
                f"{waiting[cells[index].name]}; run the tuning cells 0..{len(tuning_cells) - 1} first"
            )
        if index is None:
            for name, problem in waiting.items():
                print(f"{name} not run: {problem}", file=sys.stderr, flush=True)
            cells = [cell for cell in cells if cell.name not in waiting]
    plan.root.mkdir(parents=True, exist_ok=True)
    record_grid_cells(plan.root, plan.cells)
    if tuning is not None:
        print(f"wrote {write_tuning_record(tuning, choices, seeds)}")
    configs = {cell: runs[cell].config for cell in cells if cell in runs}
    final = run_grid(cells, plan.root, run_cell, index, overwrite=overwrite, configs=configs)
    # The summary files once the whole grid has run (an array task leaves them to --summarize).
    if grid_index is None:
        print("wrote " + ", ".join(str(path) for path in summarize(plan.root).values()))
    else:
        summarize_command = f"{command_prefix()} --summarize {shlex.quote(str(plan.root))}"
        print(f"cell {grid_index} done; once every cell has run: {summarize_command}")
    refused = ", ".join(outcome.cell.name for outcome in final if outcome.action == "refused")
    if refused:  # the cells left to the runs their folders hold
        refused = f"; refused by this command (see why above), their folders' runs not its own: {refused}"
    print(describe_progress(plan.root) + refused)
    return int(bool(waiting and grid_index is None) or not all(outcome.ok for outcome in outcomes + final))


class CellStart(Enum):
    """How a cell is started, decided from what its folder holds."""

    FRESH = "ran"
    RESUME = "resumed"  # unfinished, or finished and asked for a longer budget: from its last.ckpt
    RESTART = "restarted"  # failed, started without a checkpoint, or --overwrite: its old files are replaced


@dataclass(frozen=True)
class CellOutcome:
    """What one cell gave; `action`: `ran`, `resumed`, `restarted`, `skipped`, `in use` or `refused`."""

    cell: GridCell
    ok: bool
    error: str | None = None
    action: str = "ran"


def _how_to_start(run_dir: Path, overwrite: bool, config: RunConfig | None) -> tuple[CellStart | str, str]:
    """How to start the cell, or why to leave it (a run of other options is never replaced unasked)."""
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
    """Run every cell (or `cells[grid_index]`) in `root/<name>`; a failing cell does not stop the others."""
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
        return CellOutcome(cell, ok=False, error=says, action="refused")
    if not isinstance(start, CellStart):
        print(f"{label}: {says}", flush=True)
        return CellOutcome(cell, ok=True, action=start)
    print(f"{label}: {says} ..." if says else f"{label} ...", flush=True)
    take_noted_signal()  # a signal a run noted before this cell is not this cell's
    try:
        run_cell(cell, run_dir, start)
    except RunFolderRefused as refused:
        # Not the cell's failure: its folder is another run's; a failed.json would let a re-run replace it.
        print(f"{label} refused: {refused}", file=sys.stderr, flush=True)
        return CellOutcome(cell, ok=False, error=str(refused), action="refused")
    except Exception as error:  # noqa: BLE001 - one broken cell must not cost the rest of the grid
        return _failed(cell, run_dir, label, start, error)
    # KeyboardInterrupt and a stop signal's RunInterrupted are not caught: they stop the whole grid.
    (run_dir / FAILED_FILE).unlink(missing_ok=True)
    return CellOutcome(cell, ok=True, action=start.value)


def _failed(cell: GridCell, run_dir: Path, label: str, start: CellStart, error: Exception) -> CellOutcome:
    """A failed cell's failed.json (its next grid command runs it again), unless it holds a finished run."""
    message = describe_error(error)
    if start is not CellStart.FRESH and read_summary(run_dir) is not None:
        print(f"{label} FAILED: {message} (the cell's finished run is kept)", file=sys.stderr, flush=True)
        return CellOutcome(cell, ok=False, error=message, action=start.value)
    record = {"cell": cell.name, **{key: getattr(cell, key) for key in ("augment", "train_size", "seed")}}
    record["error"] = message
    record["traceback"] = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    write_file_atomically(run_dir / FAILED_FILE, json.dumps(record, indent=2) + "\n")
    print(f"{label} FAILED: {message} (details in {run_dir / FAILED_FILE})", file=sys.stderr, flush=True)
    return CellOutcome(cell, ok=False, error=message, action=start.value)

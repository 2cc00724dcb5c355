"""The grid command: `run.py` with lists of augmentations, train sizes or seeds, or candidate lists (Lightning
is imported only once a grid trains, so `--print-config` and errors answer as quickly as `--help`)."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_genae.errors import ConfigError, RunFolderRefused
from lightning_genae.experiment.config import NO_BACKBONE, RunConfig
from lightning_genae.experiment.program import command_prefix
from lightning_genae.experiment.resolve import (
    ResolvedRun,
    check_shape_options,
    refuse_a_folder_among_the_data,
    refuse_named_but_unread,
    stated_world_size,
)

if TYPE_CHECKING:
    from lightning_genae.experiment.ablation.cells import GridCell, GridPlan
    from lightning_genae.experiment.ablation.grid import CellOutcome, CellStart
    from lightning_genae.experiment.ablation.tuning import TuningPlan

__all__ = ["run_grid_command"]


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
    """Every (train size, augment, seed) cell as its own run under --output ROOT, then the summary files; with
    `tuning_request` (candidates per option, tune seeds) its tuning cells first (see `ablation.tuning`)."""
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
    plan = plan_grid(
        shared,
        augments=augments,
        train_sizes=train_sizes,
        seeds=seeds,
        candidates=candidates,
    )
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
    first.options.refuse_unread(named)
    refuse_named_but_unread(first, named)
    check_shape_options(first)
    if print_config:
        print(_grid_configs(plan, tuning, grid_index), end="", flush=True)
        return 0
    _refuse_cells_that_would_launch_processes(shared, grid_index)
    refuse_a_folder_among_the_data(first.config, plan.root)
    check_grid_root(plan.root)
    from lightning_genae.progress import quiet_lightning

    quiet_lightning()
    _refuse_a_grid_without_its_metrics(first, tuning=tuning is not None)
    return _train_grid(shared, plan, tuning, grid_index, overwrite=bool(values.get("overwrite")))


def _refuse_cells_that_would_launch_processes(shared: RunConfig, grid_index: int | None) -> None:
    """Refuse a grid on several devices without srun or torchrun around it: Lightning can start a cell's
    other processes itself once per process, so the second cell would fail or hang."""
    from lightning_genae.cluster import current_job

    processes = stated_world_size(shared)
    if grid_index is not None or processes == 1 or current_job() is not None or "LOCAL_RANK" in os.environ:
        return
    raise ConfigError(
        f"a grid on {processes} processes (--devices {shared.devices}) runs its cells one after another, and "
        "without srun or torchrun around it Lightning would start each cell's processes itself, which it can "
        "do once: start the grid under srun or torchrun (scripts/slurm/ablation.sbatch), or run each cell "
        "alone with --grid-index I"
    )


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
    """--print-config of a grid: every cell's configuration (or --grid-index's) under its index, tuning cells
    first; a tuned arm's final cell is known once its tuning cells have run."""
    cells = [(f"{tuning.folder.name}/{c.name}", tuning.runs[c], 1) for c in tuning.cells] if tuning else []
    for cell in plan.cells:
        candidates = len(tuning.arm_of(cell).candidates) if tuning is not None else 1
        cells.append((cell.name, plan.runs.get(cell), candidates))
    parts = []
    for index, (name, resolved, candidates) in enumerate(cells):
        if grid_index not in (None, index):
            continue
        if candidates > 1:
            parts.append(
                f"# cell {index}: {name} (runs the best of its {candidates} candidates on validation, "
                "once its tuning cells have run)\n"
            )
        else:
            parts.append(
                f"# cell {index}: {name}\n{resolved.config.with_absolute_paths().experiment().to_yaml()}"
            )
    return "".join(parts)


def _cell_runner(
    runs: dict[GridCell, ResolvedRun], overwrite: bool
) -> Callable[[GridCell, Path, CellStart], None]:
    """How a grid trains one cell: fresh, resumed, or restarted over its old files; `runs` is read when a cell
    starts, so cells added to it later run too."""
    from lightning_genae.experiment.ablation.conflicts import other_options, unfinished_run_conflicts
    from lightning_genae.experiment.ablation.grid import CellStart
    from lightning_genae.experiment.resume import to_resume
    from lightning_genae.experiment.run_folder import read_summary
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
    """Run the grid's cells (all, or `grid_index` alone), tuning cells first: the candidates on validation,
    then each arm's final cells with its choice (tuning.json); 1 if any failed or waits."""
    from lightning_genae.experiment.ablation import summarize
    from lightning_genae.experiment.ablation.cells import record_grid_cells
    from lightning_genae.experiment.ablation.conflicts import refuse_finished_runs_with_other_options
    from lightning_genae.experiment.ablation.grid import run_grid
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

"""The grid command: `run.py` with lists of augmentations, train sizes or seeds, or candidate lists.

Every (train size, augment, seed) cell runs as its own run under --output ROOT, then the summary files
are written. A tuning grid runs its candidates on validation first (ROOT/tuning/) and each arm's final
cells with the candidate it chose. Lightning is imported only once a grid trains, so `--print-config` and
the grid's configuration errors answer as quickly as `--help`.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_genae.errors import ConfigError
from lightning_genae.experiment.config import NO_BACKBONE, RunConfig, merge, print_configuration
from lightning_genae.experiment.program import command_prefix
from lightning_genae.experiment.resolve import (
    ResolvedRun,
    check_shape_options,
    refuse_a_run_folder_among_the_data,
    refuse_named_but_unread,
    stated_world_size,
)

if TYPE_CHECKING:
    from lightning_genae.datamodules import InMemoryDataModule
    from lightning_genae.experiment.ablation import CellOutcome, CellStart, GridCell, GridPlan
    from lightning_genae.experiment.ablation.tuning import ArmChoice, TuningPlan

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
    """Every (train size, augment, seed) cell as its own run under --output ROOT, then the summary files.

    With candidate lists (`tuning_request`: candidates per option, tune seeds) the tuning cells run first,
    in ROOT/tuning/, and each arm's final cells run the candidate it chose on validation (ablation.tuning).
    Grid indices name the tuning cells first, then the final cells. `named`: the options the command line
    names, refused if the family leaves them unread (`FamilyOptions.refuse_unread`).
    """
    from lightning_genae.experiment.ablation import plan_grid
    from lightning_genae.experiment.ablation.tuning import plan_tuning

    if seeds is not None and "seed" in named:
        # The cells take their seeds from --seeds alone; a --seed beside it would be silently unused. A
        # config file's seed (a run's config.yaml) is not named here and gives way to --seeds.
        raise ConfigError(
            f"--seed {values.get('seed')} and --seeds {','.join(map(str, seeds))} both give the grid's "
            "seeds; drop --seed and list every seed in --seeds"
        )
    if values.get("test_split") is False:
        # Every number of a grid's tables (and of its choice-free comparison) is of the test split.
        raise ConfigError(
            "--no-test-split: a grid's tables compare its arms on the test split, which these runs would not "
            "score; drop --no-test-split (a tuning grid's candidates are chosen on validation already)"
        )
    shared = merge(values, {})
    plan = plan_grid(
        shared,
        augments=augments,
        train_sizes=train_sizes,
        seeds=seeds,
        grid_index=grid_index,
        candidates=tuning_request[0] if tuning_request is not None else None,
    )
    tuning = plan_tuning(shared, plan, *tuning_request) if tuning_request is not None else None
    if grid_index is not None:
        # Before grid.json or the root is written: a refused start leaves nothing.
        _check_grid_index(grid_index, plan, tuning)
    for resolved in list(plan.runs.values())[:1]:
        # The cells share their family's and data options: one check stands for all, before the grid writes
        # anything (each cell's family options were checked at their values as it was planned).
        resolved.options.refuse_unread(named)
        refuse_named_but_unread(resolved, named)
        check_shape_options(resolved)
    _refuse_a_batch_larger_than_a_train_size(plan)
    if print_config:
        print_configuration(_grid_configs(plan, tuning, grid_index))
        return 0
    _refuse_cells_that_would_launch_processes(shared, grid_index)
    # Every cell reads the same data and its folder lies under the root: one check of the root stands for all.
    refuse_a_run_folder_among_the_data(next(iter(plan.runs.values())).config, plan.root)
    from lightning_genae.experiment.ablation import check_grid_root

    overwrite = bool(values.get("overwrite"))
    run_files = check_grid_root(plan.root, overwrite=overwrite)
    from lightning_genae.progress import quiet_lightning

    quiet_lightning()
    for resolved in list(plan.runs.values())[:1]:
        _check_image_backbone(resolved, tuning=tuning is not None)
    _check_augmenter_checkpoint(plan, tuning)
    # Set up once where either check needs the data: the largest --train-size's cell refuses a size beyond
    # the training split (a lone --grid-index cell checks its own as it starts).
    largest = _largest_training_data(plan) if grid_index is None else None
    _check_augmentations_on_the_data(plan, largest)
    if run_files:
        _remove_run_from_root(plan.root)
    return _train_grid(shared, plan, tuning, grid_index, overwrite=overwrite)


def _refuse_a_batch_larger_than_a_train_size(plan: GridPlan) -> None:
    """A --train-size below --batch-size, before any cell trains: training takes full batches only, so its
    cells would fail (the run's own check) after the cells of the other sizes trained."""
    too_small = sorted(
        {
            (resolved.config.train_size, resolved.config.batch_size)
            for resolved in plan.runs.values()
            if resolved.config.train_size is not None
            and resolved.config.train_size < resolved.config.batch_size
        },
        key=lambda pair: pair[0],
    )
    if too_small:
        size, batch = too_small[0]
        sizes = ", ".join(str(train_size) for train_size, _ in too_small)
        raise ConfigError(
            f"--batch-size {batch} exceeds --train-size {size}, the training images of that size's cells "
            f"(training takes full batches only); lower --batch-size to at most {size}, or drop {sizes} from "
            "--train-size"
        )


def _refuse_cells_that_would_launch_processes(shared: RunConfig, grid_index: int | None) -> None:
    """A grid runs its cells one after another in one process. With several devices and no launcher around
    it (srun, torchrun), Lightning would start each cell's other processes itself, which it does once per
    process: the second cell's fit fails or hangs. Its cells then run one per job (`--grid-index`)."""
    from lightning_genae.cluster import current_job

    processes = stated_world_size(shared)
    if grid_index is not None or processes == 1 or current_job() is not None or "LOCAL_RANK" in os.environ:
        return
    nodes = f" --num-nodes {shared.num_nodes}" if shared.num_nodes > 1 else ""
    stated = f"--devices {shared.devices}{nodes}"
    alone = "" if shared.num_nodes > 1 else ", or run each cell alone with --grid-index I"
    raise ConfigError(
        f"a grid on {processes} processes ({stated}) runs its cells one after another, and without srun or "
        "torchrun around it Lightning would start each cell's processes itself, which it can do once: "
        f"start the grid under srun or torchrun (scripts/slurm/ablation.sbatch){alone}"
    )


def _remove_run_from_root(root: Path) -> None:
    """--overwrite of a grid whose root holds a single run: that run's files go (only the names a run
    writes, as a run's --overwrite removes them), with the notice a run gives."""
    from lightning_genae.experiment.run_folder import remove_run_entries
    from lightning_genae.experiment.run_lock import RunFolderLock
    from lightning_genae.progress import say

    RunFolderLock.refuse_if_held(root)
    say(remove_run_entries(root).describe(root))


def _check_image_backbone(resolved: ResolvedRun, tuning: bool = False) -> None:
    """The grid's feature backbone, checked once before any cell runs, where a cell would otherwise fail
    or train unscored alone: Inception is built (without weights every cell would try the download again
    and fail). A family whose headline is an image metric (a GAN, an AAE, a VAE-GAN: the families with no
    validation objective of their own) needs the image metrics: not `--backbone none`, and the default
    classifier needs labels to learn. A single run without them trains without image metrics; so does a
    plain grid of such a family that also reconstructs, whose runs still report the reconstruction error
    (VAE-GAN's protocol on CelebA reads it), without a headline metric. A tuning grid needs the headline:
    it chooses each arm's candidate on it. One line (ConfigError or BackboneUnavailable) before the grid
    writes anything."""
    config = resolved.config
    if config.backbone == "inception":
        from lightning_genae.metrics.backbones import load_inception

        load_inception(config.inception_weights)
        return
    if config.backbone == "classifier" and config.classifier_weights is not None:
        # Read once here: a file of another dataset or shape would fail every cell alike (reading it loads the
        # data once, to compare the images the classifier learnt from).
        from lightning_genae.metrics.backbones import load_backbone

        datamodule = resolved.build_datamodule()
        if datamodule.data_kind == "image":
            datamodule.prepare_data()
            load_backbone("classifier", config.data, datamodule, classifier_weights=config.classifier_weights)
        return
    family = resolved.model.module
    if getattr(family, "monitor", None) is not None or not callable(getattr(family, "sample", None)):
        return  # its own validation objective is the headline (val/loss), or it draws no images to score
    if callable(getattr(family, "reconstruct", None)) and not tuning:
        return
    datamodule = resolved.build_datamodule()
    if datamodule.data_kind != "image":
        return
    why = (
        "a tuning grid chooses each arm's candidate on the validation image metrics"
        if tuning
        else "a grid compares its arms on the image metrics"
    )
    if config.backbone == NO_BACKBONE:
        raise ConfigError(f"--backbone none skips the image metrics, and {why}; drop --backbone none")
    from lightning_genae.metrics.backbones import BackboneUnavailable, check_classifier_trainable

    try:
        check_classifier_trainable(config.data, datamodule)
    except BackboneUnavailable as error:
        raise BackboneUnavailable(f"{error} ({why})") from error


def _check_augmenter_checkpoint(plan: GridPlan, tuning: TuningPlan | None) -> None:
    """A given --augment-ckpt must have been trained on every cell's training data, and a --train-size
    subset is drawn per seed: checked for each distinct training split before the first cell trains, where
    the cells whose data differ would otherwise fail after the others trained."""
    from lightning_genae.experiment.augmenter import check_augmenter_checkpoint

    runs = [*plan.runs.values(), *(tuning.runs.values() if tuning is not None else ())]
    datamodules: dict[tuple[int | None, int | None], InMemoryDataModule] = {}
    checked: set[tuple[tuple[int | None, int | None], str]] = set()
    for resolved in runs:
        augment, config = resolved.augment, resolved.config
        if augment.checkpoint is None or not augment.needs_augmenter:
            continue
        # The whole training split is the same for every seed; a subset is the seed's own. The checkpoint
        # must also be of the family each arm's augmenter is (`ae,vae` with one --augment-ckpt: one of them
        # cannot take it).
        split = (config.train_size, config.seed if config.train_size is not None else None)
        if (split, augment.augmenter_family) in checked:
            continue
        checked.add((split, augment.augmenter_family))
        if split not in datamodules:
            datamodules[split] = resolved.build_datamodule()
            datamodules[split].prepare_data()
            datamodules[split].setup("fit")
        check_augmenter_checkpoint(augment, datamodules[split])


def _largest_training_data(plan: GridPlan) -> InMemoryDataModule | None:
    """The data of the cell of the largest --train-size, set up (None where no cell gives one): a size above
    the training split is refused there, before any cell trains, where its cells would fail (the run's own
    check, in the data's set-up) after the cells of the other sizes trained, and a re-run would fail alike.
    The message is the run's."""
    sized = [resolved for resolved in plan.runs.values() if resolved.config.train_size is not None]
    if not sized:
        return None
    largest = max(sized, key=lambda resolved: resolved.config.train_size or 0)
    datamodule = largest.build_datamodule()
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def _check_augmentations_on_the_data(plan: GridPlan, datamodule: InMemoryDataModule | None = None) -> None:
    """Each arm's augmentations checked against the data as a run checks them (ADA's colour operations need
    RGB; plug-in augmentations are tried on its images) before the first cell trains, where a misfit would
    otherwise fail its cells after the other arms trained."""
    from lightning_genae.augmentation import check_fits_the_data
    from lightning_genae.experiment.attach import check_plugin_augmentations, plugin_transforms_to_try

    arms = list({resolved.config.augment: resolved for resolved in plan.runs.values()}.values())
    # ADA's operations are checked only where --ada-ops names them (its default fits any data).
    if not any(resolved.augment.options.get("ada_ops") for resolved in arms) and not any(
        plugin_transforms_to_try(resolved.augment) for resolved in arms
    ):
        return  # nothing to check: the data is not loaded
    if datamodule is None:  # any of the cells' training images will do
        datamodule = arms[0].build_datamodule()
        datamodule.prepare_data()
        datamodule.setup("fit")
    for resolved in arms:
        check_fits_the_data(resolved.augment, datamodule.data_shape[0])
        check_plugin_augmentations(resolved.augment, datamodule)


def _check_grid_index(grid_index: int, plan: GridPlan, tuning: TuningPlan | None) -> None:
    """Refuse a --grid-index that names no cell; a tuning grid's indices name its tuning cells first."""
    from lightning_genae.experiment.ablation import check_grid_index

    if tuning is None:
        check_grid_index(grid_index, len(plan.cells))
        return
    first_final = len(tuning.cells)
    total = first_final + len(plan.cells)
    if not 0 <= grid_index < total:
        raise ConfigError(
            f"--grid-index {grid_index} is out of range; this tuning grid has {first_final} tuning cells "
            f"(0..{first_final - 1}) and then {len(plan.cells)} final cells ({first_final}..{total - 1})"
        )


def _grid_configs(plan: GridPlan, tuning: TuningPlan | None, grid_index: int | None = None) -> str:
    """--print-config of a grid: every cell's configuration under its index, tuning cells first (with
    --grid-index, that cell's alone), as its config.yaml records it (the header names the cell's folder);
    a tuned arm's final cell is known once its tuning cells have run."""
    parts = []
    if tuning is not None:
        for index, cell in enumerate(tuning.cells):
            if grid_index in (None, index):
                parts.append(f"# cell {index}: {tuning.folder.name}/{cell.name}\n")
                parts.append(tuning.runs[cell].config.with_absolute_paths().experiment().to_yaml())
    first_final = len(tuning.cells) if tuning is not None else 0
    for index, cell in enumerate(plan.cells, start=first_final):
        if grid_index not in (None, index):
            continue
        arm = tuning.arm_of(cell) if tuning is not None else None
        if arm is not None and len(arm.candidates) > 1:
            parts.append(
                f"# cell {index}: {cell.name} (runs the best of its {len(arm.candidates)} candidates "
                "on validation, once its tuning cells have run)\n"
            )
            continue
        parts.append(f"# cell {index}: {cell.name}\n")
        parts.append(plan.runs[cell].config.with_absolute_paths().experiment().to_yaml())
    return "".join(parts)


def _cell_runner(
    runs: dict[GridCell, ResolvedRun], overwrite: bool
) -> Callable[[GridCell, Path, CellStart], None]:
    """How a grid trains one cell: fresh, resumed from its last.ckpt (only with the cell's own options), or
    restarted over its old files (for --overwrite, or a failed or never checkpointed cell). `runs` is read
    when a cell starts, so cells added to it later run too."""
    from lightning_genae.errors import RunFolderRefused
    from lightning_genae.experiment.ablation import CellStart
    from lightning_genae.experiment.ablation.grid import unfinished_run_conflicts
    from lightning_genae.experiment.train import run

    def run_cell(cell: GridCell, run_dir: Path, start: CellStart) -> None:
        resolved = runs[cell]
        resume = None
        if start is CellStart.RESUME:
            # Continued, never replaced: a restarted job's --overwrite was done by its earlier attempt.
            resolved = replace(resolved, config=replace(resolved.config, overwrite=False))
            from lightning_genae.experiment.resume import to_resume

            resume = to_resume("last", str(run_dir))
            conflicts = unfinished_run_conflicts(resume.stored_config("--resume"), resolved.config)
            if conflicts:
                raise RunFolderRefused(
                    f"{run_dir} holds an unfinished run with other options ({'; '.join(conflicts)}); "
                    "re-run the grid with --overwrite or another --output"
                )
        elif start is CellStart.RESTART:
            resolved = replace(resolved, config=replace(resolved.config, overwrite=True))
        replacing = "--overwrite" if overwrite else "running the cell again from scratch"
        run(resolved, resume=resume, brief=True, replacing=replacing)

    return run_cell


def _train_grid(
    shared: RunConfig, plan: GridPlan, tuning: TuningPlan | None, grid_index: int | None, overwrite: bool
) -> int:
    """Run the grid's cells (all, or `grid_index` alone), tuning cells first; 1 if any failed or waits."""
    from lightning_genae.experiment.ablation import record_grid_cells, run_grid
    from lightning_genae.experiment.ablation.grid import refuse_finished_runs_with_other_options

    runs = {**plan.runs, **(tuning.runs if tuning is not None else {})}
    # Every cell whose options are known now, whichever --grid-index runs, before grid.json is written: an
    # array task of another grid must not train among this one's cells. A tuned arm's final cells, known
    # only once its tuning has run, are refused one by one when they come.
    known = [
        (plan.root / cell.name, plan.runs[cell].config)
        for cell in plan.cells
        if cell in plan.runs and (tuning is None or len(tuning.arm_of(cell).candidates) <= 1)
    ]
    if tuning is not None:
        known += [(tuning.folder / cell.name, tuning.runs[cell].config) for cell in tuning.cells]
    refuse_finished_runs_with_other_options(known, overwrite)
    run_cell = _cell_runner(runs, overwrite)
    outcomes: list[CellOutcome] = []
    cells, final_index = plan.cells, grid_index
    not_run: dict[str, str] = {}
    if tuning is not None:
        if grid_index is None or grid_index < len(tuning.cells):
            outcomes += _run_tuning_cells(plan, tuning, run_cell, grid_index, overwrite)
            if grid_index is not None:
                from lightning_genae.experiment.ablation.tuning import choose

                _record_tuning(plan, tuning, choose(tuning))
                return 1 if any(not outcome.ok for outcome in outcomes) else 0
        cells, chosen_runs, not_run, final_index = _final_cells_after_tuning(shared, plan, tuning, grid_index)
        runs.update(chosen_runs)
    plan.root.mkdir(parents=True, exist_ok=True)
    record_grid_cells(plan.root, plan.cells)
    configs = {cell: runs[cell].config for cell in cells if cell in runs}
    final = run_grid(cells, plan.root, run_cell, final_index, overwrite=overwrite, configs=configs)
    outcomes += final
    _report_grid(
        plan.root, grid_index, [outcome.cell.name for outcome in final if outcome.action == "refused"]
    )
    # With --grid-index only the cell asked for counts: another arm still waiting for its tuning is not this
    # array task's failure (SLURM would mark it failed).
    waiting = bool(not_run) and grid_index is None
    return 1 if waiting or any(not outcome.ok for outcome in outcomes) else 0


def _run_tuning_cells(
    plan: GridPlan,
    tuning: TuningPlan,
    run_cell: Callable[[GridCell, Path, CellStart], None],
    grid_index: int | None,
    overwrite: bool,
) -> list[CellOutcome]:
    """Stage 1: the candidates, on validation only (all tuning cells, or `grid_index` alone)."""
    from lightning_genae.experiment.ablation import describe_progress, record_grid_cells, run_grid

    plan.root.mkdir(parents=True, exist_ok=True)
    record_grid_cells(plan.root, plan.cells)
    tuning.folder.mkdir(parents=True, exist_ok=True)
    record_grid_cells(tuning.folder, tuning.cells)
    configs = {cell: resolved.config for cell, resolved in tuning.runs.items()}
    outcomes = run_grid(
        tuning.cells, tuning.folder, run_cell, grid_index, overwrite=overwrite, configs=configs
    )
    print(f"tuning: {describe_progress(tuning.folder)}")
    if grid_index is not None:
        first_final, total = len(tuning.cells), len(tuning.cells) + len(plan.cells)
        print(
            f"tuning cell {grid_index} done; once tuning cells 0..{first_final - 1} have run, "
            f"run the final cells {first_final}..{total - 1}"
        )
    return outcomes


def _record_tuning(plan: GridPlan, tuning: TuningPlan, choices: Sequence[ArmChoice]) -> Path:
    """tuning.json with `choices`, made from the tuning cells' folders as they are now (after a tuning cell
    of an array task ran, and before the final cells)."""
    from lightning_genae.experiment.ablation.tuning import write_tuning_record

    return write_tuning_record(tuning, choices, sorted({cell.seed for cell in plan.cells}))


def _final_cells_after_tuning(
    shared: RunConfig, plan: GridPlan, tuning: TuningPlan, grid_index: int | None
) -> tuple[list[GridCell], dict[GridCell, ResolvedRun], dict[str, str], int | None]:
    """Stage 2: each arm's choice, made on the validation numbers alone, with the grid's seeds.

    Returns the final cells to run, the runs of the chosen candidates, the cells whose arm cannot run (with
    why), and `grid_index` as an index into the final cells. Writes tuning.json.
    """
    from lightning_genae.experiment.ablation.tuning import choose, final_cells

    first_final = len(tuning.cells)
    choices = choose(tuning)
    cells, chosen_runs, not_run = final_cells(shared, plan, choices)
    final_index = grid_index
    if grid_index is not None:
        final_index = grid_index - first_final
        problem = not_run.get(cells[final_index].name)
        if problem is not None:
            raise ConfigError(
                f"--grid-index {grid_index} is the final cell {cells[final_index].name}, whose arm "
                f"cannot run: {problem}; run (or re-run) the tuning cells 0..{first_final - 1} first"
            )
    else:
        cells = [cell for cell in cells if cell.name not in not_run]
        for name, problem in not_run.items():
            print(f"{name} not run: {problem}", file=sys.stderr, flush=True)
    from lightning_genae.experiment.ablation import record_grid_cells

    # grid.json before tuning.json: an array task starting meanwhile finds a grid's root, not a stray record.
    plan.root.mkdir(parents=True, exist_ok=True)
    record_grid_cells(plan.root, plan.cells)
    print(f"wrote {_record_tuning(plan, tuning, choices)}")
    return cells, chosen_runs, not_run, final_index


def _report_grid(root: Path, grid_index: int | None, refused: Sequence[str] = ()) -> None:
    """The summary files once the whole grid has run (an array task leaves them to --summarize), and the
    grid's progress; `refused` are the cells this command left to what their folders hold (a run with
    other options, a user's files, another run's lock), which the count reads as it finds them."""
    from lightning_genae.experiment.ablation import describe_progress, summarize

    if grid_index is None:
        paths = summarize(root)
        print("wrote " + ", ".join(str(path) for path in paths.values()))
    else:
        summarize = f"{command_prefix()} --summarize {shlex.quote(str(root))}"
        print(f"cell {grid_index} done; once every cell has run: {summarize}")
    progress = describe_progress(root)
    if refused:
        listed = ", ".join(refused)
        progress += f"; refused by this command (see why above), their folders' runs not its own: {listed}"
    print(progress)

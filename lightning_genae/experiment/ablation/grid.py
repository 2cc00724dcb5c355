"""Running an ablation grid: its cells in a fixed order, each in its own folder, failures recorded.

A grid is the Cartesian product of its three lists in a fixed order (train size outermost, then augment,
then seed), so a SLURM array index (`--grid-index K`) names the same cell on every node and every re-run.
Each cell runs in `<root>/<cell name>`; a cell that fails leaves `failed.json` there instead of stopping
the grid, and `report.summarize` turns the folders into tables. Re-running a grid command picks up where
it stopped: a finished cell is skipped, an unfinished one resumes from its `last.ckpt`, a failed one runs
again from scratch, and a cell another process is running is left to it. `grid.json` in the root names
every cell the grid's commands planned, so a summary of a partial grid can say which cells are missing.
A tuning grid (`ablation.tuning`) runs its candidates first, each a cell of `<root>/tuning/`.

Over 400 lines for one job: planning a grid's cells and running them (fresh, resumed or
restarted), with the records that let a partial grid be summarised.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from lightning_genae.cache import file_sha256, write_file_atomically
from lightning_genae.cluster import interrupted_by, take_noted_signal
from lightning_genae.errors import ConfigError, RunFolderRefused, agree, describe_error
from lightning_genae.experiment.augment_plan import given_options
from lightning_genae.experiment.config import WHOLE_SPLIT, RunConfig, absolute_path, flag, resume_conflicts
from lightning_genae.experiment.resolve import ResolvedRun, resolve
from lightning_genae.experiment.run_folder import (
    put_back_a_stopped_overwrite,
    read_summary,
    refuse_another_run,
    refuse_files_no_run_wrote,
)
from lightning_genae.experiment.run_lock import LOCK_FILE, RunFolderLock, live_lock_owner
from lightning_genae.metrics.names import SPLITS
from lightning_genae.models import unread_by_run
from lightning_genae.run_files import CHECKPOINT_DIR, CONFIG_FILE, FAILED_FILE, GRID_FILE, started_run_files

__all__ = [
    "TUNING_DIR",
    "CellOutcome",
    "CellStart",
    "GridCell",
    "GridPlan",
    "check_grid_root",
    "check_unique",
    "expand_grid",
    "plan_grid",
    "read_grid_cells",
    "record_grid_cells",
    "resolve_cell",
    "run_grid",
]

# What a grid writes at its root beside its cell folders: the cells its commands planned, the summary files,
# and a tuning grid's record of its choices.
CSV_NAME = "ablation.csv"
MD_NAME = "ablation.md"
PNG_NAME = "ablation.png"
TUNING_FILE = "tuning.json"
# Where a tuning grid's candidate runs go, beside the final cells.
TUNING_DIR = "tuning"

# A tuning cell's name goes on with its candidate: `diffaug-ts1000-seed9__diffaug_policy=color`.
_CELL_NAME = re.compile(
    r"^(?P<augment>.+?)-ts(?P<train_size>\d+|full)-seed(?P<seed>-?\d+)(?:__(?P<candidate>.+))?$"
)


@dataclass(frozen=True)
class GridCell:
    """One run of a grid: which augmentation, how many training images (None = all) and which seed.

    `options` are option values the cell sets over the grid's shared ones (a tuning candidate, or the
    values its arm chose on validation), as (name, value) pairs; a `tuning` cell names them in its folder
    name, since its arm runs one such cell per candidate.
    """

    augment: str
    train_size: int | None
    seed: int
    options: tuple[tuple[str, Any], ...] = ()
    tuning: bool = False

    @property
    def name(self) -> str:
        """The run folder's name, e.g. `ae+diffaug-ts1000-seed2` or `none-tsfull-seed0`."""
        name = f"{self.augment}-ts{train_size_label(self.train_size)}-seed{self.seed}"
        if self.tuning:
            name += "".join(f"__{option}={value}" for option, value in self.options)
        return name


class CellStart(Enum):
    """How a cell is started, decided from what its folder holds."""

    FRESH = "new"
    RESUME = "resume"  # unfinished, with checkpoints/last.ckpt
    RESTART = "restart"  # failed, started without a checkpoint, or --overwrite: its old files are removed


@dataclass(frozen=True)
class CellOutcome:
    """What one cell gave: its folder, how it was handled, and the one-line error when it failed.

    `action`: `ran`, `resumed`, `restarted`, `skipped` (finished before) or `in use` (another process runs
    it). A refused cell (its folder holds a run with other options) is not ok but leaves no failed.json.
    """

    cell: GridCell
    run_dir: Path
    ok: bool
    error: str | None = None
    action: str = "ran"


def check_unique(values: Sequence[Any], option: str) -> None:
    if not values:
        raise ConfigError(f"{option} is empty; give at least one value")
    # A train size of None is the whole split, `full` as the user writes it.
    repeated = sorted(
        {WHOLE_SPLIT if v is None else str(v) for v, count in Counter(values).items() if count > 1}
    )
    if repeated:
        raise ConfigError(
            f"{option} lists {', '.join(repeated)} more than once; give each value once "
            "(a repeated value would run the same cell twice and shift every later --grid-index)"
        )


def expand_grid(
    augments: Sequence[str], train_sizes: Sequence[int | None], seeds: Sequence[int]
) -> list[GridCell]:
    """All cells, train size outermost, then augment, then seed, so a grid index always names one cell."""
    check_unique(augments, "--augment list")
    # A combination is applied in the registry's order whatever the order typed: `ae+diffaug` and
    # `diffaug+ae` are one arm, which would run twice under two names.
    combinations: dict[frozenset[str], str] = {}
    for augment in augments:
        combination = _combination(augment)
        if combination in combinations:
            raise ConfigError(
                f"--augment list names {combinations[combination]} and {augment}, one augmentation (a "
                "combination is applied in a fixed order, whatever the order typed); give it once"
            )
        combinations[combination] = augment
    check_unique(train_sizes, "--train-size list")
    check_unique(seeds, "--seeds")
    for augment in augments:
        # The augment becomes part of a folder name; a separator would put the run somewhere else.
        if not augment or "/" in augment or "\\" in augment or augment in (".", ".."):
            raise ConfigError(f"augment {augment!r} cannot name a run folder; use names like ae+diffaug")
    return [
        GridCell(augment, train_size, seed)
        for train_size, augment, seed in itertools.product(train_sizes, augments, seeds)
    ]


@dataclass(frozen=True)
class GridPlan:
    """A grid ready to run: its root folder, its cells in index order, and each cell's resolved run."""

    root: Path
    cells: list[GridCell]
    runs: dict[GridCell, ResolvedRun]


def plan_grid(
    shared: RunConfig,
    *,
    augments: Sequence[str] | None,
    train_sizes: Sequence[int | None] | None,
    seeds: Sequence[int] | None,
    grid_index: int | None = None,
    candidates: Mapping[str, Sequence[Any]] | None = None,
) -> GridPlan:
    """Every cell's configuration, resolved before the first one trains: a typo must not surface hours in.

    `shared` holds what all cells have in common; a list left as None means the single value in `shared`.
    `candidates`: the values tuning tries per option, whose cells may read options the others do not
    (`--augment-p auto` reads `--ada-interval`).
    """
    for option in ("resume", "fast_dev_run"):
        if getattr(shared, option):
            raise ConfigError(f"{flag(option)} does not apply to a grid; run the cell alone")
    if shared.output:
        root = Path(shared.output)
    elif grid_index is not None:
        raise ConfigError("--grid-index needs --output ROOT, the folder all array tasks share")
    else:
        root = Path("runs") / f"ablation-{shared.model}-{shared.data}-{datetime.now():%Y%m%d-%H%M%S}"
    cells = expand_grid(
        _as_the_root_spells_them(root, augments or [shared.augment]),
        train_sizes or [shared.train_size],
        seeds or [shared.seed],
    )

    runs = {cell: resolve_cell(shared, root, cell) for cell in cells}
    used_somewhere = set().union(*(resolved.augment.options for resolved in runs.values()))
    for name, values in (candidates or {}).items():
        for value, augment in itertools.product(values, {cell.augment for cell in cells}):
            tried = replace(cells[0], augment=augment, options=((name, value),))
            try:
                used_somewhere |= set(resolve_cell(shared, root, tried).augment.options)
            except ConfigError:
                continue  # a candidate an arm cannot take is the tuning plan's to refuse
    stray = [key for key in given_options(shared) if key not in used_somewhere]
    if stray:
        flags = ", ".join(flag(key) for key in stray)
        raise ConfigError(
            f"{flags} {agree(stray, 'does', 'do')} nothing with any --augment of this grid; "
            f"drop {agree(stray, 'it', 'them')}"
        )
    return GridPlan(root, cells, runs)


def _combination(augment: str) -> frozenset[str]:
    return frozenset(name.strip() for name in augment.split("+"))


def _as_the_root_spells_them(root: Path, augments: Sequence[str]) -> list[str]:
    """Each augment as the grid already in `root` spells its combination (`diffaug+ada` where the command
    typed `ada+diffaug`, one arm applied in one fixed order): its cells are continued, not trained again
    under a second name and listed as a second row."""
    spelled: dict[frozenset[str], str] = {}
    for name in read_grid_cells(root):
        augment = parse_cell_name(name)[0]
        if augment is not None:
            spelled.setdefault(_combination(augment), augment)
    as_spelled = []
    for augment in augments:
        existing = spelled.get(_combination(augment), augment)
        if existing != augment:
            from lightning_genae.progress import say

            say(f"--augment {augment}: the grid in {root} spells it {existing}; continuing its cells")
        as_spelled.append(existing)
    return as_spelled


def resolve_cell(shared: RunConfig, root: Path, cell: GridCell) -> ResolvedRun:
    """The run of `cell` in a grid whose common options are `shared` and whose root is `root`.

    A tuning cell runs in `root/tuning/`, in its own W&B group, and never evaluates on the test split.
    """
    folder = root / TUNING_DIR if cell.tuning else root
    group = shared.wandb_group or root.name
    config = replace(
        shared,
        augment=cell.augment,
        train_size=cell.train_size,
        seed=cell.seed,
        output=str(folder / cell.name),
        wandb_group=f"{group}-tuning" if cell.tuning else group,
        plugin_options={**shared.plugin_options, **dict(cell.options)},
        **({"test_split": False} if cell.tuning else {}),
    )
    # Each cell keeps the augmentation options its augmentation reads; the grid checks the rest.
    return resolve(config, drop_unused_augment_options=True)


def summary_config(summary: dict[str, Any]) -> dict[str, Any]:
    """The run configuration a cell's summary.json records ({} where it records none)."""
    stored = summary.get("config")
    return stored if isinstance(stored, dict) else {}


# Options a resume may change that still decide a finished run's numbers: a finished cell run with another
# value is not the cell the grid asks for (its budget, max_steps / max_epochs, is continued instead). A
# finished cell is skipped, never resumed; its data folder may differ where the data's content is the same
# (summary.json records its SHA-256: data moved to another folder).
DEFINING_A_FINISHED_RUN = ("lr", "eval_every", "test_split", "precision", "data_dir")


def comparable(name: str, value: Any) -> Any:
    """An option's value as runs compare it: `--precision 32` is Lightning's `32-true`, and a data folder
    is its absolute path as a run stores it (`~` expanded, `config.absolute_path`)."""
    if name == "precision" and value == "32":
        return "32-true"
    if name == "data_dir" and isinstance(value, str) and value:
        return absolute_path(value)
    return value


def finished_run_conflicts(
    summary: dict[str, Any] | None, config: RunConfig | None, run_dir: Path | None = None
) -> list[str]:
    """How the finished run `summary` (a cell's summary.json, None for no finished run) differs from
    `config` in what a resume may not change, or in what decides its numbers; given the cell's folder,
    also a budget it cannot be continued to (shorter than it trained, or without its last.ckpt)."""
    if summary is None or config is None:
        return []
    stored, wanted = summary_config(summary), config.to_dict()
    augmenter = _augmenter_conflicts(summary, config)
    if not augmenter and augmenter_sha256(summary) is not None:
        # The same augmenter file's contents, moved or linked: compared by its bytes, not its path.
        stored = {name: value for name, value in stored.items() if name != "augment_ckpt"}
    unread = _unread_by_either(stored, wanted)
    conflicts = resume_conflicts(stored, wanted, unread, stored_in="finished run")
    differing = _defining_differences(stored, wanted, unread)
    if differing == ["data_dir"] and not conflicts and same_data(summary, config):
        differing = []  # the same data, moved: judged as the cell it is
    conflicts += [f"{flag(name)} {wanted[name]} (finished run: {stored[name]})" for name in differing]
    changed = _budget_changes(stored, wanted)
    budget = []
    if run_dir is not None and changed:
        budget = _budget_conflicts(summary, stored, wanted, changed, run_dir)
        if not budget and "data_dir" not in differing:
            budget = _replaced_data_conflicts(summary, config)
    return conflicts + budget + scheduled_budget_conflicts(stored, wanted) + augmenter


def _budget_changes(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The budget options (--max-steps, --max-epochs) whose value `wanted` changes from the run's `stored`."""
    return [
        name
        for name in ("max_steps", "max_epochs")
        if name in stored and name in wanted and stored[name] != wanted[name]
    ]


def _replaced_data_conflicts(summary: dict[str, Any], config: RunConfig) -> list[str]:
    """A finished cell to be continued whose data folder holds other images now (replaced in place): its
    resume would refuse them, after the cells before it had trained. Compared by the SHA-256 of each split
    that summary.json records; a run that records none is left to its resume's own check."""
    if not isinstance(summary.get("data_sha256"), dict) or same_data(summary, config):
        return []
    return [
        f"--data-dir {config.data_dir} (its images are not the ones the finished run trained on, by the "
        "SHA-256 its summary.json records; continued, it would train on other data)"
    ]


def _budget_conflicts(
    summary: dict[str, Any],
    stored: Mapping[str, Any],
    wanted: Mapping[str, Any],
    changed: list[str],
    run_dir: Path,
) -> list[str]:
    """A finished cell asked for a budget it cannot be continued to (`changed`, of `_budget_changes`): a
    shorter one than it trained (continuing trains nothing and would relabel its run as one of that budget,
    averaged with cells that trained that long), or another one without its checkpoints/last.ckpt."""
    checkpoint = run_dir / CHECKPOINT_DIR / "last.ckpt"
    if not checkpoint.is_file():
        return [
            f"{flag(name)} {wanted[name]} (finished run: {stored[name]}, without its {CHECKPOINT_DIR}/"
            "last.ckpt, so it cannot be continued)"
            for name in changed
        ]
    conflicts = []
    for name in changed:
        asked = wanted[name]
        if not isinstance(asked, int) or asked <= 0:
            continue
        # Epochs are read from the checkpoint only when asked for: a run stopped by --max-steps records no
        # epoch budget, and its summary.json no epoch count.
        done = summary.get("global_step") if name == "max_steps" else _epochs_done(checkpoint)
        if isinstance(done, int) and asked < done:
            conflicts.append(
                f"{flag(name)} {asked} (finished run: {stored[name]}, trained to {done}; a shorter "
                "budget is not had by continuing it)"
            )
    return conflicts


def _epochs_done(checkpoint: Path) -> int | None:
    """The epochs a finished cell's last.ckpt completed, as a --max-epochs budget counts them."""
    from lightning_genae.checkpoint import RunCheckpoint

    try:
        return RunCheckpoint.load(checkpoint, "--max-epochs").epochs()
    except ConfigError:
        return None  # an unreadable checkpoint is the resume's own refusal


def _augmenter_conflicts(summary: dict[str, Any], config: RunConfig) -> list[str]:
    """A finished cell whose augmenter was an --augment-ckpt file of other contents than the file of that
    name holds now (retrained, replaced): its numbers are another augmenter's. Its summary.json records the
    file's SHA-256 (one without it, of an earlier version, is compared by path alone, as a resume does)."""
    given = config.plugin_options.get("augment_ckpt")
    recorded = augmenter_sha256(summary)
    if not given or recorded is None:
        return []
    try:
        now = file_sha256(given)
    except OSError:
        return []  # a missing file is the run's own refusal
    if now == recorded:
        return []
    return [
        f"--augment-ckpt {given} (its contents are not the augmenter the finished run used: SHA-256 "
        f"{now[:12]}, finished run: {recorded[:12]})"
    ]


def augmenter_sha256(summary: Mapping[str, Any]) -> str | None:
    """The SHA-256 of the --augment-ckpt file a finished run's augmenter was read from (summary.json's
    record; None for an augmenter trained or cached by the run, or a run of an earlier version)."""
    record = summary.get("augmentation")
    augmenter = record.get("augmenter") if isinstance(record, dict) else None
    sha256 = augmenter.get("sha256") if isinstance(augmenter, dict) else None
    return sha256 if isinstance(sha256, str) else None


def unfinished_run_conflicts(stored: Mapping[str, Any], config: RunConfig) -> list[str]:
    """How the unfinished run whose configuration is `stored` (its checkpoint's, or its config.yaml's)
    differs from `config` in what a grid may not continue it with: what a resume may not change, and what
    decides a finished run's numbers (a cell resumed at another learning rate would be half of one run and
    half of another, averaged with fresh cells as if it were either). Its data folder may move: a resume
    checks the data's content."""
    wanted = dict(config.to_dict())
    unread = _unread_by_either(stored, wanted)
    differing = [name for name in _defining_differences(stored, wanted, unread) if name != "data_dir"]
    return (
        resume_conflicts(stored, wanted, unread, stored_in="the run there")
        + [f"{flag(name)} {wanted[name]} (the run there: {stored[name]})" for name in differing]
        + scheduled_budget_conflicts(stored, wanted)
    )


def _unread_by_either(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> frozenset[str]:
    """The options the stored run or the wanted one leaves unread (`lr` under a paper's training): not
    compared, since neither acted (a run records them as None, one of an earlier version at their
    defaults). A difference in what leaves them unread (`gan_training`) is compared as itself."""
    return unread_by_run(str(stored.get("model", "")), stored) | unread_by_run(
        str(wanted.get("model", "")), wanted
    )


def _defining_differences(
    stored: Mapping[str, Any], wanted: Mapping[str, Any], unread: Collection[str] = ()
) -> list[str]:
    return [
        name
        for name in DEFINING_A_FINISHED_RUN
        if name not in unread
        and name in stored
        and name in wanted
        and comparable(name, stored[name]) != comparable(name, wanted[name])
    ]


def _recorded_configuration(run_dir: Path) -> dict[str, Any]:
    """The options a run's config.yaml records ({} where it is missing or unreadable: the cell's checkpoint
    is checked when it resumes)."""
    import yaml

    try:
        recorded = yaml.safe_load((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


# Options whose value makes a schedule run over the budget (--max-steps or --max-epochs): p or the learning
# rate taken to 0 at its end.
_SCHEDULES_OVER_THE_BUDGET = {"augment_anneal": True, "lr_schedule": "cosine"}


def scheduled_budget_conflicts(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """A cell whose schedule runs over its budget is not continued to another budget (finished, or resumed
    unfinished): continued, its schedule would restart part-way (p or the learning rate rising again from
    0), which is not the run that a fresh cell of the new budget is, and its row would average the two."""
    schedules = [
        f"--{name.replace('_', '-')}" + ("" if value is True else f" {value}")
        for name, value in _SCHEDULES_OVER_THE_BUDGET.items()
        if stored.get(name) == value
    ]
    if not schedules:
        return []
    return [
        f"{flag(name)} {wanted[name]} (the run there: {stored[name]}, the budget its "
        f"{' and '.join(schedules)} schedule runs over; continued, it would not be a run of the new budget)"
        for name in _budget_changes(stored, wanted)
    ]


def same_data(summary: dict[str, Any], config: RunConfig) -> bool:
    """Whether `config`'s data (read now, each split) is, by SHA-256, what the finished run's summary.json
    records it trained and was scored on; False where it records none (an earlier version's run)."""
    stored = summary.get("data_sha256")
    if not isinstance(stored, dict):
        return False
    return dict(stored) == _data_sha256(resolve(config, drop_unused_augment_options=True))


def _data_sha256(resolved: ResolvedRun) -> dict[str, str]:
    """Each split's SHA-256 as a run of `resolved` records it in summary.json; one read per distinct data."""
    config = resolved.config
    # The seed picks the training subset of a --train-size; without one every seed reads the same data.
    seed = config.seed if config.train_size is not None else None
    key = json.dumps(
        [config.data, config.data_dir, config.train_size, seed, resolved.data_options.to_dict()],
        sort_keys=True,
        default=str,
    )
    if key not in _DATA_SHA256:
        datamodule = resolved.build_datamodule()
        _DATA_SHA256[key] = {split: datamodule.content_sha256(split) for split in SPLITS}
    return _DATA_SHA256[key]


_DATA_SHA256: dict[str, dict[str, str]] = {}


def refuse_finished_runs_with_other_options(cells: Sequence[tuple[Path, RunConfig]], overwrite: bool) -> None:
    """Refuse the whole grid, before any cell trains, when a cell's folder holds a run, finished or to be
    resumed, with other options: the command given is not the grid that folder holds, and its tables would
    mix the two. `cells` are (cell folder, the options the grid asks of it). With `overwrite` only cells
    another command is running are compared: they are left to it, not replaced."""
    clashing = [
        (folder, conflicts)
        for folder, config in cells
        if (not overwrite or live_lock_owner(folder) is not None)
        and (conflicts := _cell_conflicts(folder, config))
    ]
    if clashing:
        run_dir, conflicts = clashing[0]
        finished = all(read_summary(folder) is not None for folder, _ in clashing)
        hold = agree(
            clashing,
            *(("holds a finished run", "hold finished runs") if finished else ("holds a run", "hold runs")),
        )
        raise RunFolderRefused(
            f"{len(clashing)} of the {len(cells)} cells {hold} with other options (the first, {run_dir}: "
            f"{'; '.join(conflicts)}); re-run the grid with --overwrite or another --output"
        )


def _cell_conflicts(run_dir: Path, config: RunConfig) -> list[str]:
    # A cell's run that an --overwrite killed part-way had set aside, back before the cell is judged.
    put_back_a_stopped_overwrite(run_dir)
    summary = read_summary(run_dir)
    if summary is not None:
        return finished_run_conflicts(summary, config, run_dir)
    # A cell the grid resumes (a failed one starts again from scratch), or one another grid command is
    # running now, before its first checkpoint: left to that command, it would still be averaged here.
    resumed = (run_dir / CHECKPOINT_DIR / "last.ckpt").is_file() and not (run_dir / FAILED_FILE).is_file()
    if resumed or live_lock_owner(run_dir) is not None:
        return unfinished_run_conflicts(_recorded_configuration(run_dir), config)
    return []


def holds_a_run_of_other_options(run_dir: Path, config: RunConfig) -> bool:
    """Whether the run in `run_dir` (finished or not) was started with other options than `config`: other
    in what a resume may not change or in what decides its numbers (--lr included). A restarted job's
    --overwrite, grid cell or single run, replaces such a run as another's and continues none."""
    summary = read_summary(run_dir)
    if summary is not None:
        return bool(finished_run_conflicts(summary, config))
    return bool(unfinished_run_conflicts(_recorded_configuration(run_dir), config))


def _how_to_start(
    run_dir: Path, overwrite: bool, config: RunConfig | None
) -> tuple[CellStart | None, str, str | None]:
    """(how to start the cell or None to leave it, what the console says, the refusal when it is refused)."""
    put_back_a_stopped_overwrite(run_dir)
    owner = live_lock_owner(run_dir)
    lock = run_dir / LOCK_FILE
    if owner is not None:
        return None, f"in use by another run ({owner}), left to it (if that run is gone: rm {lock})", None
    if overwrite:
        from lightning_genae.experiment.resume import earlier_attempt_wrote

        # A restarted job's grid continues the cells its earlier attempt already replaced, and replaces no
        # cell it cannot tell from them.
        wrote = earlier_attempt_wrote(run_dir)
        # Another run's options: the run the --overwrite replaces, whoever wrote it.
        if wrote == "unknown" and config is not None and holds_a_run_of_other_options(run_dir, config):
            wrote = "other"
        if wrote == "unknown":
            refusal = (
                f"this restarted job cannot tell whether {run_dir} is a cell its earlier attempt ran or one "
                "its --overwrite replaces (its checkpoint names no job, or torchrun runs without "
                "--rdzv-id); run the grid again without --overwrite to continue it, or submit the job "
                "again to replace it"
            )
            return None, "refused", refusal
        overwrite = wrote != "own"
    if overwrite:
        start = CellStart.RESTART if run_dir.exists() else CellStart.FRESH
        return start, "starting over (--overwrite)", None
    if (run_dir / FAILED_FILE).is_file():
        return CellStart.RESTART, "failed before, running it again from scratch", None
    summary = read_summary(run_dir)
    has_checkpoint = (run_dir / CHECKPOINT_DIR / "last.ckpt").is_file()
    if summary is not None:
        step = summary.get("global_step", "?")
        stored = summary_config(summary)
        conflicts = finished_run_conflicts(summary, config, run_dir)
        if conflicts:
            refusal = (
                f"{run_dir} holds a finished run with other options ({'; '.join(conflicts)}); "
                "re-run the grid with --overwrite or another --output"
            )
            return None, "refused", refusal
        new_budget = config is not None and bool(_budget_changes(stored, config.to_dict()))
        if new_budget and has_checkpoint:
            return CellStart.RESUME, f"finished at step {step}, continuing to the new budget", None
        return None, f"finished (step {step}), skipped", None
    if has_checkpoint:
        return CellStart.RESUME, "unfinished, resuming from its last.ckpt", None
    if started_run_files(run_dir):
        return CellStart.RESTART, "started but never checkpointed, running it again from scratch", None
    return CellStart.FRESH, "...", None


_ACTIONS = {CellStart.FRESH: "ran", CellStart.RESUME: "resumed", CellStart.RESTART: "restarted"}


def check_grid_index(grid_index: int, total: int) -> None:
    """Refuse a --grid-index outside a grid of `total` cells (before anything of the grid is written)."""
    if total == 0:
        raise ConfigError(f"--grid-index {grid_index}: the grid is empty; give at least one cell")
    if not 0 <= grid_index < total:
        raise ConfigError(
            f"--grid-index {grid_index} is out of range; this grid has {total} cells, so pass 0..{total - 1}"
        )


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

    What each cell's folder holds decides how it starts (see the module); `configs` (each cell's resolved
    configuration) lets a finished cell be checked against what the grid asks for now.
    """
    root = Path(root)
    total = len(cells)
    if grid_index is None:
        selected = list(enumerate(cells))
    else:
        check_grid_index(grid_index, total)
        selected = [(grid_index, cells[grid_index])]

    # An --overwrite of the whole grid notes the cells it has yet to replace, so that the grid stopped
    # part-way and run again (its printed command has no --overwrite) replaces the rest rather than keeping
    # their old runs beside the new ones.
    pending = overwrite_pending(root)
    if overwrite and grid_index is None:
        from lightning_genae.experiment.resume import earlier_attempt_wrote

        # A requeued job's earlier attempt already replaced the cells it wrote: they are continued, not
        # replaced again, and are no longer the old runs.
        pending += [
            cell.name
            for cell in cells
            if cell.name not in pending and earlier_attempt_wrote(root / cell.name) != "own"
        ]
        set_overwrite_pending(root, pending)

    def replaced(cell: GridCell) -> None:
        if cell.name in pending:
            pending.remove(cell.name)
            set_overwrite_pending(root, pending)

    outcomes = []
    time_left = TimeLeft(len(selected))
    for index, cell in selected:
        time_left.next_cell()
        run_dir = root / cell.name
        label = f"[{index + 1}/{total}] {cell.name}"
        start, says, refusal = _how_to_start(
            run_dir, overwrite or cell.name in pending, configs.get(cell) if configs else None
        )
        if refusal is not None:
            print(f"{label} refused: {refusal}", file=sys.stderr, flush=True)
            outcomes.append(CellOutcome(cell, run_dir, ok=False, error=refusal, action="refused"))
            continue
        if start is None:
            print(f"{label}: {says}", flush=True)
            action = "in use" if says.startswith("in use") else "skipped"
            outcomes.append(CellOutcome(cell, run_dir, ok=True, action=action))
            continue
        print(f"{label} ..." if start is CellStart.FRESH else f"{label}: {says} ...", flush=True)
        error: BaseException | None = None
        cell_started = time.monotonic()
        take_noted_signal()  # a signal a run noted before this cell is not this cell's
        try:
            run_cell(cell, run_dir, start)
        except RunFolderRefused as refused:
            # Not the cell's failure: its folder is another run's (or in use); recording it as failed would
            # make the next re-run replace that run.
            print(f"{label} refused: {refused}", file=sys.stderr, flush=True)
            outcomes.append(CellOutcome(cell, run_dir, ok=False, error=str(refused), action="refused"))
            continue
        except Exception as caught:  # noqa: BLE001 - one broken cell must not cost the rest of the grid
            error = caught
        except SystemExit as caught:
            # A CLI-style run_cell exits instead of raising; only a non-zero exit is a failure.
            if caught.code not in (None, 0):
                error = caught
        # KeyboardInterrupt is deliberately not caught: Ctrl-C (or SLURM's SIGINT) stops the whole grid.
        time_left.trained(label, time.monotonic() - cell_started)
        # Finished or failed (its failed.json starts it over anyway): no longer the old run.
        replaced(cell)
        failed_file = run_dir / FAILED_FILE
        if error is None:
            failed_file.unlink(missing_ok=True)
            outcomes.append(CellOutcome(cell, run_dir, ok=True, action=_ACTIONS[start]))
            noted = take_noted_signal()
            if noted is not None and (index, cell) != selected[-1]:
                # The signal came in the cell's last iteration, so the cell finished; the grid stops before
                # the next one (under SLURM's warning signal, requeued to go on).
                raise interrupted_by(
                    noted,
                    f"stopped by {signal.Signals(noted).name}: {label} finished (the signal came in its last "
                    "iteration)",
                    "run the grid command again to go on with the other cells",
                )
            continue
        message = describe_error(error)
        if start is not CellStart.FRESH and read_summary(run_dir) is not None:
            # A failed restart put the finished run it would have replaced back, and a failed continuation
            # to a new budget left it where it was: the cell is that run again, not a failed one (a
            # failed.json would make the next re-run replace it unasked).
            print(f"{label} FAILED: {message} (the cell's finished run is kept)", file=sys.stderr, flush=True)
            outcomes.append(CellOutcome(cell, run_dir, ok=False, error=message, action=_ACTIONS[start]))
            continue
        record = {
            "cell": cell.name,
            "augment": cell.augment,
            "train_size": cell.train_size,
            "seed": cell.seed,
            "error": message,
            "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        }
        write_file_atomically(failed_file, json.dumps(record, indent=2) + "\n")
        print(
            f"{label} FAILED: {message} (details in {failed_file})",
            file=sys.stderr,
            flush=True,
        )
        outcomes.append(CellOutcome(cell, run_dir, ok=False, error=message, action=_ACTIONS[start]))
    return outcomes


# Cells quicker than this on average (a set-up check) get no estimate: the next line comes soon anyway.
QUICK_CELL_SECONDS = 5.0


class TimeLeft:
    """After each cell that trained, on stderr: how long it took and, while cells remain, about how long
    the rest will take at the mean time of the cells trained so far (finished cells that are skipped make
    the estimate an upper bound)."""

    def __init__(self, cells: int) -> None:
        self.cells, self.started, self.spent, self.count = cells, 0, 0.0, 0

    def next_cell(self) -> None:
        self.started += 1

    def trained(self, label: str, seconds: float) -> None:
        # Imported here: console imports Lightning, which `run.py --help` must not.
        from lightning_genae.progress import format_duration

        self.spent += seconds
        self.count += 1
        if self.spent / self.count < QUICK_CELL_SECONDS:
            return
        remaining = self.cells - self.started
        line = f"{label} took {format_duration(seconds)}"
        if remaining:
            left = format_duration(self.spent / self.count * remaining)
            cells = f"{remaining} cell{'s' if remaining > 1 else ''}"
            line += f"; about {left} left for the {cells} still to come"
        print(line, file=sys.stderr, flush=True)


def check_grid_root(root: Path, *, overwrite: bool) -> list[str]:
    """Refuse a grid's `--output` that holds what a grid would replace; returns the files of a run there
    that `overwrite` removes.

    A root is new, empty, or a grid's (a grid.json of ours: re-running, continuing and array tasks, which
    may start at once, write into it). A grid.json that is not ours, or summary files beside no grid.json,
    are refused even with `overwrite`: they may be the user's. A single run's files are refused as a single
    run refuses them; `overwrite` removes only the names a run writes (run_folder.remove_run_entries).
    """
    if not root.is_dir():
        return []
    # A run writing there that has not written its files yet is named by its lock.
    RunFolderLock.refuse_if_held(root)
    refuse_summary_files_of_no_grid(root, "--output")
    refuse_runs_of_no_grid(root, "--output")
    files = started_run_files(root)
    refuse_files_no_run_wrote(root, files)
    if files and not overwrite:
        refuse_another_run(
            root,
            files,
            [
                "pick another --output for the grid",
                "or give --overwrite to remove that run's files (only the names a run writes) and put the "
                "grid there",
            ],
        )
    return files


def refuse_summary_files_of_no_grid(root: Path, flag: str) -> None:
    """Refuse a root without grid.json that holds files of a grid's summary names: without grid.json
    nothing tells a grid's from a user's (a figure or notes of the same name), and a grid or a summary
    would replace them."""
    if grid_record(root, flag) is not None:
        return
    found = [name for name in (CSV_NAME, MD_NAME, PNG_NAME, TUNING_FILE) if (root / name).exists()]
    if found:
        verb = "a grid" if flag == "--output" else "the summary"
        raise RunFolderRefused(
            f"{flag} {root} holds {', '.join(found)} but no {GRID_FILE} of an ablation grid, and {verb} "
            f"would replace them; pick another {flag} (--overwrite never replaces files a grid did not write)"
        )


def refuse_runs_of_no_grid(root: Path, flag: str) -> None:
    """Refuse a root without grid.json whose run folders are not all named as a grid's cells (a folder of
    single runs, such as `runs/`): a grid there, or a summary of it, would put them in the grid's tables
    (and a summary would record them as cells in a grid.json, after which a run into the folder is refused
    as a grid's)."""
    if grid_record(root, flag) is not None or not root.is_dir():
        return
    others = sorted(
        path.name
        for path in root.iterdir()
        if path.is_dir() and started_run_files(path) and not _CELL_NAME.match(path.name)
    )
    if others:
        listed = ", ".join(others[:2]) + (f" and {len(others) - 2} more" if len(others) > 2 else "")
        fix = "pass the --output folder of a grid"
        if flag == "--output":
            fix = "pick another --output for the grid"
        raise RunFolderRefused(
            f"{flag} {root} holds no {GRID_FILE} of an ablation grid, and its runs ({listed}) are not a "
            f"grid's cells, which its tables would mix with them; {fix}"
        )


def grid_record(root: Path, flag: str) -> list[str] | None:
    """The cell names `<root>/grid.json` lists; None where there is none. A grid.json that is not ours
    (unreadable, or no list of cell names) is refused: a grid never reads it as empty and replaces it."""
    path = Path(root) / GRID_FILE
    if not path.exists() and not path.is_symlink():
        return None
    cells = _listed_cells(path)
    if cells is None:
        raise RunFolderRefused(
            f"{flag} {root}: its {GRID_FILE} is not an ablation grid's list of cells, so the folder is not "
            f"a grid's; pick another {flag} (--overwrite never replaces a file a grid did not write)"
        )
    return cells


def record_grid_cells(root: Path, cells: Sequence[GridCell | str]) -> None:
    """Add `cells` (or cell names) to `<root>/grid.json`, the cells a summary expects (every grid command
    into `root`, and a summary of cell folders from before grid.json)."""
    known = grid_record(root, "--output") or []
    given = [cell if isinstance(cell, str) else cell.name for cell in cells]
    names = known + [name for name in given if name not in known]
    if names != known:
        _write_grid_json(root, {**_grid_json(root), "cells": names})


def overwrite_pending(root: Path) -> list[str]:
    """The cells an `--overwrite` of the grid in `root` has yet to replace (grid.json's `overwrite_pending`):
    a grid stopped part-way through its --overwrite leaves them, and the grid command run again (with or
    without --overwrite) replaces them before it counts them as finished; until then their old runs are not
    reported."""
    pending = _grid_json(root).get("overwrite_pending")
    return [name for name in pending if isinstance(name, str)] if isinstance(pending, list) else []


def set_overwrite_pending(root: Path, names: Sequence[str]) -> None:
    record = _grid_json(root)
    if names:
        record["overwrite_pending"] = list(names)
    elif record.pop("overwrite_pending", None) is None:
        return
    _write_grid_json(root, {"cells": [], **record})


def _grid_json(root: Path) -> dict[str, Any]:
    try:
        record = json.loads((Path(root) / GRID_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_grid_json(root: Path, record: dict[str, Any]) -> None:
    write_file_atomically(Path(root) / GRID_FILE, json.dumps(record, indent=2) + "\n")


def read_grid_cells(root: Path) -> list[str]:
    """The cell names `<root>/grid.json` lists; none for a root without one (or one that is not a grid's:
    `grid_record` refuses those where a grid would write)."""
    return _listed_cells(Path(root) / GRID_FILE) or []


def _listed_cells(path: Path) -> list[str] | None:
    """The cell names a grid.json lists; None where the file is missing, unreadable or not a list of names."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    cells = record.get("cells") if isinstance(record, dict) else None
    if not isinstance(cells, list) or not all(isinstance(name, str) for name in cells):
        return None
    return cells


def train_size_label(train_size: int | None) -> str:
    """How a train size reads in folder names and tables: the count, or `full` for the whole split."""
    return WHOLE_SPLIT if train_size is None else str(train_size)


def parse_cell_name(name: str) -> tuple[str | None, int | None, int | None]:
    """augment, train size, seed parsed from a grid folder name (for runs whose files cannot be read)."""
    match = _CELL_NAME.match(name)
    if match is None:
        return None, None, None
    size = match["train_size"]
    return match["augment"], None if size == WHOLE_SPLIT else int(size), int(match["seed"])

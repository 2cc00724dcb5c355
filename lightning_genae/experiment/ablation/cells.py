"""An ablation grid's cells in a fixed order (`--grid-index K` names the same cell on every node), each in
`<root>/<cell name>`, and `grid.json`, which lists the planned cells and marks the root as a grid's."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from lightning_genae.augmentation import augmentation_options
from lightning_genae.cache import write_file_atomically
from lightning_genae.errors import ConfigError, RunFolderRefused, refuse_unread
from lightning_genae.experiment.config import WHOLE_SPLIT, RunConfig
from lightning_genae.experiment.resolve import ResolvedRun, resolve
from lightning_genae.experiment.run_folder import another_run, read_json_object, refuse_files_no_run_wrote
from lightning_genae.experiment.run_lock import RunFolderLock
from lightning_genae.run_files import GRID_FILE, started_run_files

# What a grid writes at its root beside its cells: the summary files and a tuning grid's record.
CSV_NAME, MD_NAME, PNG_NAME, TUNING_FILE = "ablation.csv", "ablation.md", "ablation.png", "tuning.json"
# Where a tuning grid's candidate runs go, beside the final cells.
TUNING_DIR = "tuning"

# A tuning cell's name goes on with its candidate: `diffaug-ts1000-seed9__diffaug_policy=color`.
_CELL_NAME = re.compile(
    r"^(?P<augment>.+?)-ts(?P<train_size>\d+|full)-seed(?P<seed>-?\d+)(?:__(?P<candidate>.+))?$"
)


@dataclass(frozen=True)
class GridCell:
    """One run of a grid: augment, train size (None = all), seed, and `options` over the grid's shared."""

    augment: str
    train_size: int | None
    seed: int
    options: tuple[tuple[str, Any], ...] = ()
    tuning: bool = False

    @property
    def name(self) -> str:
        """The run folder's name, e.g. `ae+diffaug-ts1000-seed2` or `none-tsfull-seed0`."""
        name = f"{self.augment}-ts{train_size_label(self.train_size)}-seed{self.seed}"
        return name + "".join(f"__{option}={value}" for option, value in self.options if self.tuning)


def train_size_label(train_size: int | None) -> str:
    """How a train size reads in folder names and tables: the count, or `full` for the whole split."""
    return WHOLE_SPLIT if train_size is None else str(train_size)


def parse_cell_name(name: str) -> tuple[str | None, int | None, int | None]:
    """augment, train size, seed of a cell's folder name (None each for a name that is no cell's)."""
    match = _CELL_NAME.match(name)
    if match is None:
        return None, None, None
    size = match["train_size"]
    return match["augment"], None if size == WHOLE_SPLIT else int(size), int(match["seed"])


def check_unique(values: Sequence[Any], option: str) -> None:
    """Each value once: a repeated one would run a cell twice and shift every later --grid-index."""
    repeated = sorted({train_size_label(value) for value, count in Counter(values).items() if count > 1})
    if repeated:
        raise ConfigError(f"{option} lists {', '.join(repeated)} more than once; give each value once")


def expand_grid(
    augments: Sequence[str], train_sizes: Sequence[int | None], seeds: Sequence[int]
) -> list[GridCell]:
    """Every cell, by train size, then augment, then seed: a grid index names one cell."""
    # `ae+diffaug` and `diffaug+ae` are one arm.
    check_unique(
        ["+".join(sorted(name.strip() for name in a.split("+"))) for a in augments], "--augment list"
    )
    check_unique(train_sizes, "--train-size list")
    check_unique(seeds, "--seeds")
    product = itertools.product(train_sizes, augments, seeds)
    return [GridCell(augment, train_size, seed) for train_size, augment, seed in product]


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
    candidates: Mapping[str, Sequence[Any]] | None = None,
) -> GridPlan:
    """Every cell's configuration, resolved before the first trains (a list left None: `shared`'s value)."""
    if shared.output:
        root = Path(shared.output)
    else:
        root = Path("runs") / f"ablation-{shared.model}-{shared.data}-{datetime.now():%Y%m%d-%H%M%S}"
    cells = expand_grid(
        augments or [shared.augment], train_sizes or [shared.train_size], seeds or [shared.seed]
    )
    runs = {cell: resolve_cell(shared, root, cell) for cell in cells}
    _refuse_options_no_arm_reads(shared, root, cells, runs, candidates or {})
    return GridPlan(root, cells, runs)


def _refuse_options_no_arm_reads(
    shared: RunConfig,
    root: Path,
    cells: list[GridCell],
    runs: Mapping[GridCell, ResolvedRun],
    candidates: Mapping[str, Sequence[Any]],
) -> None:
    """Refuse an augmentation option or candidate list no arm reads (each candidate resolved with each arm,
    as `--augment-p auto` reads `--ada-interval`): an ablation never runs with a setting believed on."""
    read = set().union(*(resolved.augment.options for resolved in runs.values()))
    for name, values in candidates.items():
        for value, augment in itertools.product(values, {cell.augment for cell in cells}):
            tried = replace(cells[0], augment=augment, options=((name, value),))
            try:
                read |= set(resolve_cell(shared, root, tried).augment.options)
            except ConfigError:
                continue  # a candidate an arm cannot take is refused as the tuning plan resolves it
    given = shared.given_plugin_options(augmentation_options())
    stray = [name for name in [*given, *candidates] if name not in read]
    refuse_unread(stray, {}, "does nothing with any --augment of this grid; drop it")


def resolve_cell(shared: RunConfig, root: Path, cell: GridCell) -> ResolvedRun:
    """The run of `cell`; a tuning cell runs in `root/tuning/`, its own W&B group, off the test split."""
    group = shared.wandb_group or root.name
    config = replace(
        shared,
        augment=cell.augment,
        train_size=cell.train_size,
        seed=cell.seed,
        output=str((root / TUNING_DIR if cell.tuning else root) / cell.name),
        wandb_group=f"{group}-tuning" if cell.tuning else group,
        plugin_options={**shared.plugin_options, **dict(cell.options)},
        **({"test_split": False} if cell.tuning else {}),
    )
    return resolve(config, drop_unused_augment_options=True)


def grid_record(root: Path, flag: str = "--output") -> dict[str, Any] | None:
    """`<root>/grid.json` (None without one); one that is not a grid's list of cells is refused."""
    path = Path(root) / GRID_FILE
    if not path.exists() and not path.is_symlink():
        return None
    record = read_json_object(path)
    cells = record.get("cells") if record is not None else None
    if not isinstance(cells, list) or not all(isinstance(name, str) for name in cells):
        raise RunFolderRefused(
            f"{flag} {root}: its {GRID_FILE} is not an ablation grid's list of cells; pick another {flag}"
        )
    return record


def read_grid_cells(root: Path) -> list[str]:
    return (grid_record(root) or {"cells": []})["cells"]


def record_grid_cells(root: Path, cells: Sequence[GridCell | str]) -> None:
    """Add `cells` (or their names) to `<root>/grid.json`."""
    record = grid_record(root)
    known = record["cells"] if record else []
    new = [name for name in (c if isinstance(c, str) else c.name for c in cells) if name not in known]
    if new or record is None:
        _write_grid_record(root, {**(record or {}), "cells": known + new})


def overwrite_pending(root: Path) -> list[str]:
    """The cells a stopped `--overwrite` of the grid has yet to replace; their old runs are not reported."""
    return list((grid_record(root) or {}).get("overwrite_pending", []))


def set_overwrite_pending(root: Path, names: Sequence[str]) -> None:
    record = {"cells": [], **(grid_record(root) or {}), "overwrite_pending": list(names)}
    if not names:
        del record["overwrite_pending"]
    _write_grid_record(root, record)


def _write_grid_record(root: Path, record: Mapping[str, Any]) -> None:
    write_file_atomically(root / GRID_FILE, json.dumps(record, indent=2) + "\n")


def check_grid_root(root: Path, flag: str = "--output") -> None:
    """Refuse a root not new, empty or a grid's, before writing: its files would be replaced or mixed in."""
    if not root.is_dir() or grid_record(root, flag) is not None:
        return
    RunFolderLock.refuse_if_held(root)
    # A grid's summary files would replace these, and its tables mix in runs that are no grid's cells.
    found = [name for name in (CSV_NAME, MD_NAME, PNG_NAME, TUNING_FILE) if (root / name).exists()]
    found += sorted(
        f"the run {path.name}"
        for path in root.iterdir()
        if path.is_dir() and started_run_files(path) and not _CELL_NAME.match(path.name)
    )
    if found:
        raise RunFolderRefused(
            f"{flag} {root} holds {', '.join(found)} but no {GRID_FILE} of a grid; pick another {flag}"
        )
    files = started_run_files(root)
    if files and flag == "--output":
        refuse_files_no_run_wrote(root, files)
        raise another_run(root, files, ["pick another --output for the grid"])

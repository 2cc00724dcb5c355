"""An ablation grid's run folders as the report reads them, and whether a row's runs are one experiment: the
same options but the seed, the same backbone and test images, the same data by content."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_genae.errors import ConfigError, describe_error
from lightning_genae.experiment.ablation.cells import (
    overwrite_pending,
    parse_cell_name,
    read_grid_cells,
    train_size_label,
)
from lightning_genae.experiment.ablation.conflicts import (
    BUDGETS,
    DEFINING_A_FINISHED_RUN,
    augmenter_sha256,
    json_object,
    summary_config,
)
from lightning_genae.experiment.config import CHANGEABLE_ON_RESUME, COMMAND_LINE_ONLY, comparable, flag
from lightning_genae.experiment.run_lock import live_lock_owner
from lightning_genae.metrics.names import test_headline
from lightning_genae.models import unread_by_run
from lightning_genae.run_files import FAILED_FILE, SUMMARY_FILE, started_run_files


@dataclass
class CellRun:
    """One run folder as the report sees it: identity, status (ok, failed, `pending`), an ok one's summary."""

    cell: str
    run_dir: Path
    augment: str | None
    train_size: int | None
    seed: int | None
    ok: bool
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    pending: str | None = None

    @property
    def failed(self) -> bool:
        return not self.ok and self.pending is None

    @property
    def status(self) -> str:
        return "ok" if self.ok else self.pending or "failed"

    @property
    def row(self) -> str:
        """The table row the run belongs to, `ae-ts1000`: an augment at a train size."""
        return f"{self.augment or '?'}-ts{train_size_label(self.train_size)}"

    @property
    def final_metrics(self) -> dict[str, Any]:
        return json_object(self.summary, "final_metrics")

    @property
    def selected(self) -> dict[str, Any]:
        """summary.json's record of the checkpoint chosen on validation (empty for runs without one)."""
        return json_object(self.summary, "selected_checkpoint")

    @property
    def selected_metrics(self) -> dict[str, Any]:
        """The test metrics of the checkpoint chosen on validation; empty when none was chosen."""
        return json_object(self.selected, "test_metrics")

    @property
    def test_evaluation(self) -> dict[str, Any]:
        return json_object(json_object(self.summary, "evaluation"), "test")

    @property
    def headline(self) -> str | None:
        """The test-split version of the run's headline metric (`val/fd_x` -> `test/fd_x`)."""
        return test_headline(self.summary.get("headline_metric"), self.final_metrics)

    def sort_key(self) -> tuple[Any, ...]:
        return (train_size_key(self.train_size), self.augment or "", train_size_key(self.seed), self.cell)


def train_size_key(train_size: int | None) -> tuple[int, int]:
    """None (the whole split, an unknown seed) sorts last."""
    return (1, 0) if train_size is None else (0, train_size)


def seed_text(seed: int | None) -> str:
    return f"seed {'?' if seed is None else seed}"


# Options a row's cells may differ in without changing its numbers: the seed, what describes one invocation,
# and what a resume may change that does not decide a finished run's numbers (data is compared by hash).
ROW_FREE_OPTIONS = frozenset(
    {"seed", "data_dir", *COMMAND_LINE_ONLY}
    | set(CHANGEABLE_ON_RESUME) - {*BUDGETS, *DEFINING_A_FINISHED_RUN}
)


def _row_traits(run: CellRun, leave_out: Collection[str] = (), rows: bool = False) -> dict[str, Any]:
    """What decides a finished run's numbers and must agree among the seeds of its row (`rows`: in a form
    rows with and without --train-size share): its options, augmenter, backbone, test images and data."""
    config = summary_config(run.summary)
    unread = unread_by_run(str(config.get("model", "")), config)
    traits = {
        flag(name): comparable(name, value)
        for name, value in config.items()
        if name not in ROW_FREE_OPTIONS and name not in leave_out and name not in unread
    }
    if augmenter_sha256(run.summary) is not None:
        traits.pop(flag("augment_ckpt"), None)
        traits["augmenter (SHA-256 of --augment-ckpt)"] = augmenter_sha256(run.summary)
    test = run.test_evaluation
    backbone = test.get("backbone")
    # A classifier file is named by its content: copies of one file are one backbone.
    traits["backbone"] = re.sub(r"given as [^,]*, ", "", backbone) if isinstance(backbone, str) else backbone
    traits["test images"] = test.get("n_real")
    traits["generated images"] = test.get("generated")  # binarized before their features (binary data)
    hashes = run.summary.get("data_sha256")
    if isinstance(hashes, dict) and run.train_size is None and not rows:
        traits["data (SHA-256 of train, val, test)"] = hashes
    elif isinstance(hashes, dict):
        # Each seed draws its own --train-size subset: the seeds share the evaluation splits and the whole
        # training split the subsets are drawn from.
        traits["data (SHA-256 of val, test)"] = {k: v for k, v in hashes.items() if k != "train"}
        if run.train_size is None:
            traits["whole training split drawn from (SHA-256)"] = hashes.get("train")
        elif "training_split_sha256" in run.summary:
            traits["whole training split drawn from (SHA-256)"] = run.summary["training_split_sha256"]
    return traits


def _differences(labelled: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Each trait on which the labelled traits disagree, naming which labels hold which value."""
    seen: dict[str, dict[str, list[str]]] = {}  # trait -> its value as JSON -> the labels holding it
    for label, traits in labelled:
        for trait, value in traits.items():
            holders = seen.setdefault(trait, {}).setdefault(json.dumps(value, sort_keys=True), [])
            if label not in holders:
                holders.append(label)
    problems = []
    for trait, values in seen.items():
        if len(values) > 1:
            listed = "; ".join(
                f"{json.loads(text)!r} in {', '.join(labels)}" for text, labels in values.items()
            )
            problems.append(f"{trait} differs ({listed})")
    return problems


def row_disagreement(group: Iterable[CellRun], chosen: Mapping[str, Any] | None = None) -> str:
    """Why a table row's finished runs are not one experiment (empty if they are): options, seeds, tuning."""
    ok_runs = sorted((run for run in group if run.ok), key=CellRun.sort_key)
    problems = []
    for name, value in (chosen or {}).items():
        ran = [
            f"{seed_text(run.seed)} ran {config[name]!r}"
            for run in ok_runs
            if name in (config := summary_config(run.summary))
            and json.dumps(config[name]) != json.dumps(value)
        ]
        if ran:
            problems.append(f"{flag(name)} chosen {value!r}, but {', '.join(ran)}")
    folders = Counter(run.seed for run in ok_runs)
    problems += [
        f"{seed_text(seed)} is in {count} folders ({', '.join(r.cell for r in ok_runs if r.seed == seed)})"
        for seed, count in folders.items()
        if count > 1
    ]
    problems += _differences((seed_text(run.seed), _row_traits(run, chosen or {})) for run in ok_runs)
    if not problems:
        return ""
    problems.append("run them again with --overwrite")
    return f"not averaged, its runs are not one experiment: {'; '.join(problems)}"


# How `table_disagreement` names the iterations the rows of one training size trained.
ITERATIONS_TRAINED = "iterations trained"


def table_disagreement(runs: Iterable[CellRun]) -> dict[str, str]:
    """Each trait the finished runs of one table differ in beyond augmentation and training size, and at one
    training size the iterations trained (an offline pool lengthens its arm's epochs)."""
    from lightning_genae.augmentation import augmentation_options

    ok_runs = sorted((run for run in runs if run.ok), key=CellRun.sort_key)
    leave_out = {"augment", "train_size", *augmentation_options()}
    problems = _differences((run.row, _row_traits(run, leave_out, rows=True)) for run in ok_runs)
    for size in dict.fromkeys(run.train_size for run in ok_runs):
        trait = f"{ITERATIONS_TRAINED} at --train-size {train_size_label(size)}"
        problems += _differences(
            (run.row, {trait: run.summary["global_step"]})
            for run in ok_runs
            if run.train_size == size and "global_step" in run.summary
        )
    return {problem.partition(" differs (")[0]: problem for problem in problems}


def read_json(path: Path) -> tuple[dict[str, Any], str | None]:
    """A run's JSON record and, where it is unreadable or no object, why."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return {}, f"corrupt {path.name}: {describe_error(error)}"
    if not isinstance(data, dict):
        return {}, f"corrupt {path.name}: expected a JSON object, got {type(data).__name__}"
    if not isinstance(data.get("final_metrics", {}), dict):
        return {}, f"corrupt {path.name}: final_metrics is not a JSON object"
    return data, None


def _load_run(run_dir: Path) -> CellRun:
    augment, train_size, seed = parse_cell_name(run_dir.name)
    failed = (run_dir / FAILED_FILE).is_file()
    summary, problem = read_json(run_dir / (FAILED_FILE if failed else SUMMARY_FILE))
    if failed or problem is not None:
        error = problem or str(summary.get("error") or "unknown error (failed.json has no 'error')")
        return CellRun(run_dir.name, run_dir, augment, train_size, seed, ok=False, error=error)
    config = summary_config(summary)
    augment = config.get("augment", summary.get("augment", augment))
    train_size = config["train_size"] if "train_size" in config else train_size
    seed = config.get("seed", summary.get("seed", seed))
    return CellRun(run_dir.name, run_dir, augment, train_size, seed, ok=True, summary=summary)


def load_runs(root: Path) -> list[CellRun]:
    """Every cell of the grid in `root`: its run folders, and the cells grid.json plans that have none."""
    folders = sorted(path for path in root.iterdir() if path.is_dir())
    finished = {p.name for p in folders if (p / SUMMARY_FILE).is_file() or (p / FAILED_FILE).is_file()}
    planned = set(read_grid_cells(root)) | {p.name for p in folders if started_run_files(p)}
    if not finished and not planned:
        raise ConfigError(f"no runs in {root}; run a grid first, or pass the grid's --output folder")
    # Cells an --overwrite stopped part-way has yet to replace: their old runs are not this grid's numbers.
    replacing = set(overwrite_pending(root))
    runs = [_load_run(root / name) for name in sorted(finished - replacing)]
    for name in sorted((planned | replacing) - (finished - replacing)):
        augment, train_size, seed = parse_cell_name(name)
        pending = pending_status(root / name)
        runs.append(CellRun(name, root / name, augment, train_size, seed, ok=False, pending=pending))
    return sorted(runs, key=CellRun.sort_key)


def pending_status(run_dir: Path) -> str:
    """`running`, `unfinished` or `missing`: what a folder holding no finished or failed run holds."""
    if live_lock_owner(run_dir):
        return "running"
    return "unfinished" if started_run_files(run_dir) else "missing"


def not_finished(
    runs: Iterable[CellRun], statuses: tuple[str, ...] = ("running", "unfinished", "missing")
) -> str:
    """`running: a; missing: b` for the cells of those statuses."""
    runs = list(runs)
    listed = {status: [run.cell for run in runs if run.status == status] for status in statuses}
    return "; ".join(f"{status}: {', '.join(cells)}" for status, cells in listed.items() if cells)


def describe_progress(root: Path) -> str:
    """One line: how many of the grid's cells finished, and which are failed, running, unfinished, missing."""
    runs = load_runs(Path(root))
    parts = [f"{sum(run.ok for run in runs)} of {len(runs)} cells finished"]
    parts += [not_finished(runs, ("failed", "running", "unfinished", "missing"))]
    if any(run.status in ("unfinished", "missing", "failed") for run in runs):
        parts.append("re-run the grid command to run, resume or retry them")
    return "; ".join(part for part in parts if part)


def main_headline(runs: Iterable[CellRun]) -> str | None:
    """The test headline most finished runs report (ties: the first by name, so the report is stable)."""
    counts = Counter(run.headline for run in runs if run.ok and run.headline is not None)
    return min(counts, key=lambda name: (-counts[name], name)) if counts else None


def number(value: Any) -> float | None:
    """A metric's value as a number; None for anything else (a bool, text, a missing value)."""
    return None if isinstance(value, bool) or not isinstance(value, (int, float)) else float(value)

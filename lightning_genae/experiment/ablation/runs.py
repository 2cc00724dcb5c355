"""An ablation grid's run folders as the report reads them: each cell's identity, status and summary.

A cell is finished (summary.json), failed (failed.json, always its latest attempt) or pending: missing
(never started), unfinished (started, not running now) or running (its lock's owner is alive).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_genae.errors import ConfigError, describe_error
from lightning_genae.experiment.ablation.grid import (
    DEFINING_A_FINISHED_RUN,
    FAILED_FILE,
    augmenter_sha256,
    comparable,
    overwrite_pending,
    parse_cell_name,
    read_grid_cells,
    summary_config,
    train_size_label,
)
from lightning_genae.experiment.config import CHANGEABLE_ON_RESUME, COMMAND_LINE_ONLY, flag
from lightning_genae.experiment.run_lock import live_lock_owner
from lightning_genae.metrics.names import current_names, test_headline
from lightning_genae.models import unread_by_run
from lightning_genae.run_files import SUMMARY_FILE, started_run_files


@dataclass
class CellRun:
    """One run folder as summarize sees it: identity, status and (when ok) its summary.json."""

    cell: str
    run_dir: Path
    augment: str | None
    train_size: int | None
    seed: int | None
    ok: bool
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    # A cell that has not finished and has not failed: `missing` (never started), `unfinished` (started,
    # not running now: resume it by re-running the grid command) or `running` (its lock's owner is alive).
    pending: str | None = None

    @property
    def failed(self) -> bool:
        return not self.ok and self.pending is None

    @property
    def status(self) -> str:
        return "ok" if self.ok else self.pending or "failed"

    @property
    def final_metrics(self) -> dict[str, Any]:
        metrics = self.summary.get("final_metrics")
        # A cell finished by an earlier version may hold a metric under its former name.
        return current_names(metrics) if isinstance(metrics, dict) else {}

    @property
    def selected(self) -> dict[str, Any]:
        """summary.json's record of the checkpoint chosen on validation (empty for runs without one)."""
        selected = self.summary.get("selected_checkpoint")
        return selected if isinstance(selected, dict) else {}

    @property
    def selected_metrics(self) -> dict[str, Any]:
        """The test metrics of the checkpoint chosen on validation; empty when none was chosen."""
        metrics = self.selected.get("test_metrics")
        return metrics if isinstance(metrics, dict) else {}

    @property
    def test_evaluation(self) -> dict[str, Any]:
        evaluation = self.summary.get("evaluation")
        test = evaluation.get("test") if isinstance(evaluation, dict) else None
        return test if isinstance(test, dict) else {}

    @property
    def headline(self) -> str | None:
        """The test-split version of the run's headline metric (`val/fd_x` -> `test/fd_x`)."""
        return test_headline(self.summary.get("headline_metric"), self.final_metrics)

    def sort_key(self) -> tuple[Any, ...]:
        return (train_size_key(self.train_size), self.augment or "", _seed_key(self.seed), self.cell)


# Options a row's cells may differ in without changing its numbers: the grid's seed axis, what describes
# one invocation, and what a resume may change that does not decide a finished run's numbers (where and
# how a run ran, logging, the cadences of pictures and checkpoints, the paths of weight files), the data
# folder included (its content is compared by hash). Every other option, the backbone that scored a run
# and the size of its test evaluation must agree for the cells' mean ± std to be one experiment's.
ROW_FREE_OPTIONS = frozenset(
    {"seed", "data_dir", *COMMAND_LINE_ONLY}
    | set(CHANGEABLE_ON_RESUME) - {"max_steps", "max_epochs", *DEFINING_A_FINISHED_RUN}
)


def row_disagreement(group: Iterable[CellRun], chosen: Mapping[str, Any] | None = None) -> str:
    """Why the finished cells of one table row are not one experiment (empty when they are): the options
    they differ in, or a tuned arm's cell that ran other values than the choice `chosen`, naming which
    seeds hold which value. Such a row is not averaged."""
    chosen = chosen or {}
    ok_runs = sorted((run for run in group if run.ok), key=lambda run: run.sort_key())
    problems = []
    for name, value in chosen.items():
        ran = [
            f"{_seed_label(run)} ran {config[name]!r}"
            for run in ok_runs
            if name in (config := summary_config(run.summary)) and _text(config[name]) != _text(value)
        ]
        if ran:
            problems.append(f"{flag(name)} chosen {value!r}, but {', '.join(ran)}")
    folders_of_seed: dict[int | None, list[str]] = {}
    for run in ok_runs:
        folders_of_seed.setdefault(run.seed, []).append(run.cell)
    problems += [
        f"{_seed_text(seed)} is in {len(cells)} folders ({', '.join(cells)})"
        for seed, cells in folders_of_seed.items()
        if len(cells) > 1
    ]
    problems += _differences((_seed_label(run), _row_traits(run, leave_out=chosen)) for run in ok_runs)
    if not problems:
        return ""
    return (
        "not averaged, its runs are not one experiment: "
        + "; ".join(problems)
        + "; run them again with --overwrite (or another --output)"
    )


def _row_traits(run: CellRun, leave_out: Collection[str]) -> dict[str, Any]:
    """What decides a finished run's numbers and must agree among the seeds of its row: its options
    (but the row-free ones and `leave_out`), the backbone and number of test images of its evaluation, and
    its data by content."""
    config = summary_config(run.summary)
    # Options the run leaves unread (a rae's width) decide nothing: runs record them as None, runs of an
    # earlier version at their defaults.
    unread = unread_by_run(str(config.get("model", "")), config)
    traits = {
        flag(name): comparable(name, value)
        for name, value in config.items()
        if name not in ROW_FREE_OPTIONS and name not in leave_out and name not in unread
    }
    augmenter = augmenter_sha256(run.summary)
    if augmenter is not None:
        # An --augment-ckpt file by its content: copies under other names are one augmenter, and a file
        # retrained in place between seeds is two.
        traits.pop(flag("augment_ckpt"), None)
        traits["augmenter (SHA-256 of --augment-ckpt)"] = augmenter
    backbone = run.test_evaluation.get("backbone")
    # A classifier given as a file is named by it: copies of one file under other names are one backbone.
    traits["backbone"] = re.sub(r"given as [^,]*, ", "", backbone) if isinstance(backbone, str) else backbone
    traits["test images"] = run.test_evaluation.get("n_real")
    # Recorded where the generated images were binarized before their features (binary data).
    traits["generated images"] = run.test_evaluation.get("generated")
    hashes = run.summary.get("data_sha256")
    if isinstance(hashes, dict):  # the data by content (runs of this version)
        if run.train_size is None:
            traits["data (SHA-256 of train, val, test)"] = hashes
        else:
            # A --train-size subset is drawn by each seed, so the seeds' training subsets differ by
            # design: they must share the evaluation splits and the whole training split drawn from.
            traits["data (SHA-256 of val, test)"] = {k: v for k, v in hashes.items() if k != "train"}
            whole = run.summary.get("training_split_sha256")
            if isinstance(whole, str):  # not recorded by earlier versions' runs
                traits["whole training split drawn from (SHA-256)"] = whole
    return traits


def _table_traits(run: CellRun) -> dict[str, Any]:
    """What must agree among all rows of one table, which differ by design in their arm (the augmentation
    and its options) and training size: the row's traits without those, and the data by content in a form
    that rows with and without --train-size share (the evaluation splits, and the whole training split)."""
    from lightning_genae.augmentation import augmentation_options

    traits = _row_traits(run, leave_out={"augment", "train_size", *augmentation_options()})
    hashes = traits.pop("data (SHA-256 of train, val, test)", None)
    if isinstance(hashes, dict):
        traits["data (SHA-256 of val, test)"] = {k: v for k, v in hashes.items() if k != "train"}
        traits["whole training split drawn from (SHA-256)"] = hashes.get("train")
    return traits


def _differences(labelled: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Each trait on which the labelled traits disagree, naming which labels hold which value."""
    # trait -> its value (as JSON text) -> the labels that have it
    seen: dict[str, dict[str, list[str]]] = {}
    for label, traits in labelled:
        for trait, value in traits.items():
            holders = seen.setdefault(trait, {}).setdefault(_text(value), [])
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


# How `table_disagreement` names the iterations the rows of one training size trained.
ITERATIONS_TRAINED = "iterations trained"


def table_disagreement(runs: Iterable[CellRun]) -> dict[str, str]:
    """Why the rows of one table are not one experiment (empty when they are): each trait their finished
    runs differ in beyond each row's augmentation, its options and the training size, with which rows hold
    which value. Such rows do not rank against each other."""
    ok_runs = sorted((run for run in runs if run.ok), key=lambda run: run.sort_key())
    problems = _differences((_row_label(run), _table_traits(run)) for run in ok_runs)
    # The rows of one training size must also have trained as many iterations: under --max-epochs an
    # offline pool lengthens its arm's epochs (the pool is part of its data), which the options alone do not
    # show. Rows of other training sizes differ in it by design under --max-epochs.
    for train_size in dict.fromkeys(run.train_size for run in ok_runs):
        problems += _differences(
            (_row_label(run), {f"{ITERATIONS_TRAINED} at --train-size {train_size_label(train_size)}": steps})
            for run in ok_runs
            if run.train_size == train_size and (steps := as_int(run.summary.get("global_step"))) is not None
        )
    return {problem.partition(" differs (")[0]: problem for problem in problems}


def _row_label(run: CellRun) -> str:
    return f"{run.augment or '?'}-ts{'full' if run.train_size is None else run.train_size}"


def _text(value: Any) -> str:
    """A value as comparable text (JSON, keys sorted)."""
    return json.dumps(value, sort_keys=True)


def _seed_label(run: CellRun) -> str:
    return _seed_text(run.seed)


def _seed_text(seed: int | None) -> str:
    return f"seed {'?' if seed is None else seed}"


def train_size_key(train_size: int | None) -> tuple[int, int]:
    # "full" (None) is the largest train size, so it sorts last.
    return (1, 0) if train_size is None else (0, train_size)


def _seed_key(seed: int | None) -> tuple[int, int]:
    return (1, 0) if seed is None else (0, seed)


def as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return None, f"corrupt {path.name}: {describe_error(error)}"
    if not isinstance(data, dict):
        return None, f"corrupt {path.name}: expected a JSON object, got {type(data).__name__}"
    return data, None


def _load_run(run_dir: Path) -> CellRun:
    name_augment, name_size, name_seed = parse_cell_name(run_dir.name)
    failed_file = run_dir / FAILED_FILE
    # run_grid deletes failed.json when a cell succeeds, so a failed.json is always the latest attempt,
    # even beside a summary.json left by an earlier success.
    if failed_file.is_file():
        record, problem = read_json(failed_file)
        record = record or {}
        return CellRun(
            cell=run_dir.name,
            run_dir=run_dir,
            augment=str(record["augment"]) if record.get("augment") is not None else name_augment,
            train_size=as_int(record["train_size"]) if "train_size" in record else name_size,
            seed=as_int(record.get("seed")) if record.get("seed") is not None else name_seed,
            ok=False,
            error=problem or str(record.get("error") or "unknown error (failed.json has no 'error')"),
        )
    summary, problem = read_json(run_dir / SUMMARY_FILE)
    if summary is None:
        return CellRun(run_dir.name, run_dir, name_augment, name_size, name_seed, ok=False, error=problem)
    if "final_metrics" in summary and not isinstance(summary["final_metrics"], dict):
        return CellRun(
            run_dir.name,
            run_dir,
            name_augment,
            name_size,
            name_seed,
            ok=False,
            error=f"corrupt {SUMMARY_FILE}: final_metrics is not a JSON object",
        )
    config = summary_config(summary)
    augment = config.get("augment", summary.get("augment", name_augment))
    train_size = as_int(config["train_size"]) if "train_size" in config else name_size
    seed = as_int(config.get("seed", summary.get("seed", name_seed)))
    return CellRun(
        cell=run_dir.name,
        run_dir=run_dir,
        augment=str(augment) if augment is not None else None,
        train_size=train_size,
        seed=seed,
        ok=True,
        summary=summary,
    )


def _pending_run(run_dir: Path) -> CellRun:
    """A planned cell with neither summary.json nor failed.json, or one an --overwrite has yet to replace:
    missing, unfinished or running."""
    augment, train_size, seed = parse_cell_name(run_dir.name)
    owner = live_lock_owner(run_dir)
    pending = "running" if owner else "unfinished" if started_run_files(run_dir) else "missing"
    return CellRun(run_dir.name, run_dir, augment, train_size, seed, ok=False, pending=pending)


def load_runs(root: Path) -> list[CellRun]:
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise ConfigError(
            f"ablation folder {root} {what}; run a grid first, or pass the grid's --output folder"
        )
    # Cells a grid command planned, and cell folders a run started in (a grid from before grid.json).
    planned = set(read_grid_cells(root)) | {
        path.name for path in root.iterdir() if path.is_dir() and started_run_files(path)
    }
    run_dirs = {
        path.name: path
        for path in sorted(root.iterdir())
        if path.is_dir() and ((path / SUMMARY_FILE).is_file() or (path / FAILED_FILE).is_file())
    }
    if not run_dirs and not planned:
        raise ConfigError(
            f"no runs in {root} (no sub-folder holds {SUMMARY_FILE} or {FAILED_FILE}); "
            "run a grid first, or pass the grid's --output folder"
        )
    # Cells an --overwrite stopped part-way has yet to replace: their old runs are not this grid's numbers.
    replacing = set(overwrite_pending(root))
    runs = [_load_run(path) for name, path in run_dirs.items() if name not in replacing]
    runs += [_pending_run(root / name) for name in sorted((planned | replacing) - {run.cell for run in runs})]
    return sorted(runs, key=CellRun.sort_key)


def describe_progress(root: Path) -> str:
    """One line: how many of the grid's cells finished, and which are failed, running, unfinished, missing."""
    runs = load_runs(Path(root))
    finished = sum(run.ok for run in runs)
    parts = [f"{finished} of {len(runs)} cells finished"]
    for status in ("failed", "running", "unfinished", "missing"):
        names = [run.cell for run in runs if run.status == status]
        if names:
            parts.append(f"{status}: {', '.join(names)}")
    if any(run.status in ("unfinished", "missing", "failed") for run in runs):
        parts.append("re-run the grid command to run, resume or retry them")
    return "; ".join(parts)


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def main_headline(runs: Iterable[CellRun]) -> str | None:
    counts = Counter(run.headline for run in runs if run.ok and run.headline is not None)
    if not counts:
        return None
    # Most runs' headline wins; ties go to the alphabetically first so the report is deterministic.
    return min(counts, key=lambda name: (-counts[name], name))


def unique(values: Iterable[Any]) -> list[str]:
    return sorted({str(value) for value in values if value is not None and value != ""})


def not_finished(runs: list[CellRun]) -> str:
    """` (missing: a; unfinished: b)` for the planned cells that have neither finished nor failed."""
    parts = []
    for status in ("running", "unfinished", "missing"):
        names = [run.cell for run in runs if run.status == status]
        if names:
            parts.append(f"{status}: {', '.join(names)}")
    return f" ({'; '.join(parts)})" if parts else ""

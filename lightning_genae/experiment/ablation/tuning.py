"""Tuning a grid's arms (`--augment-p 0.1,0.25 --tune-seeds 9`): every candidate an arm reads, per tune seed,
on the validation split in `ROOT/tuning/`; then the best with the grid's seeds (ROOT/tuning.json)."""

from __future__ import annotations

import itertools
import json
import math
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lightning_genae.augmentation import augmentation_options, tunable_options
from lightning_genae.cache import write_file_atomically
from lightning_genae.errors import ConfigError, agree
from lightning_genae.experiment.ablation.cells import (
    TUNING_DIR,
    TUNING_FILE,
    GridCell,
    GridPlan,
    check_unique,
    resolve_cell,
)
from lightning_genae.experiment.ablation.conflicts import BUDGETS, finished_run_conflicts, summary_config
from lightning_genae.experiment.ablation.runs import pending_status, read_json
from lightning_genae.experiment.config import RunConfig, flag
from lightning_genae.experiment.resolve import ResolvedRun
from lightning_genae.experiment.run_folder import read_json_object, read_summary
from lightning_genae.metrics.names import Direction, try_parse
from lightning_genae.run_files import FAILED_FILE

Candidate = tuple[tuple[str, Any], ...]


def candidate_separators(option: str) -> str:
    """`|` separates the candidates of every tunable option; a number's also take commas (`0.1,0.25`)."""
    kind = augmentation_options()[option][0]
    return "|," if {int, float} & {kind, *typing.get_args(kind)} else "|"


def candidate_texts(option: str, text: str) -> list[str]:
    """The candidates a command-line value of `option` lists, as text (one for a plain value)."""
    pattern = "[" + re.escape(candidate_separators(option)) + "]"
    return [item.strip() for item in re.split(pattern, text) if item.strip()]


def split_candidates(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(`values` without candidate lists, each tunable option given several values -> its candidates)."""
    rest, lists = dict(values), {}
    for option in tunable_options():
        candidates = values.get(option)
        candidates = candidates if isinstance(candidates, list) else [candidates]
        if len(candidates) > 1:
            check_unique(candidates, f"{flag(option)} candidate list")
            lists[option] = rest.pop(option)
        elif candidates and candidates[0] is not None:
            rest[option] = candidates[0]
    return rest, lists


def check_tuning_request(candidates: Mapping[str, Sequence[Any]], tune_seeds: Sequence[int] | None) -> None:
    """Candidate lists and `--tune-seeds` come together: each means nothing without the other."""
    if candidates and tune_seeds is None:
        option, values = next(iter(candidates.items()))
        listed = candidate_separators(option)[-1].join(map(str, values))
        raise ConfigError(f"{flag(option)} {listed} lists candidates to tune; add --tune-seeds S or give one")
    if tune_seeds is not None and not candidates:
        raise ConfigError("--tune-seeds tunes a grid's candidate lists, and none was given; drop it")


@dataclass(frozen=True)
class TuningArm:
    """An arm of a tuning grid (augment, train size) and its candidates, each of every tunable it reads."""

    augment: str
    train_size: int | None
    reads: tuple[str, ...]
    candidates: tuple[Candidate, ...]

    @property
    def tuned(self) -> dict[str, list[Any]]:
        """option -> its candidate values, for the options with several."""
        values = {
            option: list(dict.fromkeys(dict(c)[option] for c in self.candidates if option in dict(c)))
            for option in self.reads
        }
        return {option: listed for option, listed in values.items() if len(listed) > 1}

    def cells(self, tune_seeds: Sequence[int]) -> list[GridCell]:
        """Its tuning cells, candidate by candidate, each with every tune seed; none for one candidate."""
        if len(self.candidates) < 2:
            return []
        return [
            GridCell(self.augment, self.train_size, seed, candidate, tuning=True)
            for candidate in self.candidates
            for seed in tune_seeds
        ]


@dataclass(frozen=True)
class TuningPlan:
    """Stage 1 of a grid: its arms, tuning cells in index order and their resolved runs."""

    root: Path
    arms: list[TuningArm]
    tune_seeds: list[int]
    cells: list[GridCell]
    runs: dict[GridCell, ResolvedRun]

    @property
    def folder(self) -> Path:
        return self.root / TUNING_DIR

    def arm_of(self, cell: GridCell) -> TuningArm:
        return next(a for a in self.arms if (a.augment, a.train_size) == (cell.augment, cell.train_size))


def plan_tuning(
    shared: RunConfig, grid: GridPlan, candidates: Mapping[str, Sequence[Any]], tune_seeds: Sequence[int]
) -> TuningPlan:
    """Every arm's candidates (combinations, resolved) and tuning cells: a bad one fails before training."""
    check_unique(tune_seeds, "--tune-seeds")
    # A seed that chose an arm's options would also score them: the row would keep the draw that won.
    shared_seeds = sorted(set(tune_seeds) & {cell.seed for cell in grid.cells})
    if shared_seeds:
        raise ConfigError(
            f"--tune-seeds {','.join(map(str, shared_seeds))} {agree(shared_seeds, 'is', 'are')} also a seed "
            "of the grid's final runs (--seeds, or --seed); tune with other seeds"
        )
    tunable, arms = tunable_options(), {}
    for cell in grid.cells:
        if (cell.augment, cell.train_size) in arms:
            continue
        used = grid.runs[cell].augment.options
        considered = [option for option in tunable if option in used or option in candidates]
        found: dict[Candidate, None] = {}
        for combo in itertools.product(
            *(candidates.get(option, [used.get(option)]) for option in considered)
        ):
            given = tuple(zip(considered, combo, strict=True))
            read = resolve_cell(shared, grid.root, replace(cell, options=given)).augment.options
            found.setdefault(tuple((option, read[option]) for option in tunable if option in read))
        reads = tuple(option for option in tunable if any(option in dict(c) for c in found))
        arms[cell.augment, cell.train_size] = TuningArm(cell.augment, cell.train_size, reads, tuple(found))
    cells = [cell for arm in arms.values() for cell in arm.cells(tune_seeds)]
    runs = {cell: resolve_cell(shared, grid.root, cell) for cell in cells}
    return TuningPlan(grid.root, list(arms.values()), list(tune_seeds), cells, runs)


def _cell_result(run_dir: Path, config: RunConfig | None, budget: Mapping[str, Any]) -> dict[str, Any]:
    """`{"value", "metric"}` of a finished tuning cell, `{"error"}` of a failed one, else `{"status"}`; a run
    with other options than `config` (without it, another `budget`) is not taken for it."""
    if (run_dir / FAILED_FILE).is_file():
        record, problem = read_json(run_dir / FAILED_FILE)
        return {"error": str(problem or record.get("error") or "failed (failed.json has no 'error')")}
    summary = read_summary(run_dir)
    if summary is None:
        return {"status": pending_status(run_dir)}
    conflicts = finished_run_conflicts(summary, config) if config is not None else []
    if conflicts:
        return {"error": f"holds a run with other options ({'; '.join(conflicts)}); re-run with --overwrite"}
    if any(summary_config(summary).get(name) != value for name, value in budget.items()):
        return {"status": "unfinished"}  # finished at another budget: the grid command continues it
    metric = summary.get("headline_metric")
    value = summary["final_metrics"].get(metric) if isinstance(metric, str) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return {"error": f"no finite validation headline ({metric}) in its summary.json"}
    return {"value": float(value), "metric": metric}


def _budget(plan: TuningPlan) -> dict[str, Any]:
    """The budget every tuning cell trains with ({} for a plan of none)."""
    return {name: getattr(run.config, name) for run in list(plan.runs.values())[:1] for name in BUDGETS}


def _decide(record: dict[str, Any], folder: Path) -> None:
    """Set an arm's record's candidate means (over every tune seed), metric, and choice or problem."""
    runs = [run for candidate in record["candidates"] for run in candidate["runs"]]
    for candidate in record["candidates"]:
        values = [run["value"] for run in candidate["runs"] if "value" in run]
        candidate["mean"] = (
            sum(values) / len(values) if values and len(values) == len(candidate["runs"]) else None
        )
    pending = [f"{run['cell']} ({run['status']})" for run in runs if "status" in run]
    metrics = sorted({run["metric"] for run in runs if "metric" in run})
    scored = [(c["mean"], index) for index, c in enumerate(record["candidates"]) if c["mean"] is not None]
    record.update(chosen=None, metric=metrics[0] if metrics else None)
    for key in ("direction", "problem"):
        record.pop(key, None)
    if pending:
        record["problem"] = f"its tuning is not finished ({', '.join(pending)})"
    elif len(metrics) > 1:
        record["problem"] = f"its tuning runs report different headlines ({', '.join(metrics)})"
    elif not scored:
        first = next((run["error"] for run in runs if "error" in run), "no run recorded")
        record["problem"] = f"no tuning candidate was scored on every tune seed ({first}; see {folder})"
    if "problem" in record:
        return
    parsed = try_parse(metrics[0])
    higher = parsed is not None and parsed.direction is Direction.HIGHER
    # The best mean; on a tie the earlier candidate, so the choice depends on nothing but the numbers.
    best = min(scored, key=lambda item: (-item[0] if higher else item[0], item[1]))[1]
    record["chosen"] = dict(record["candidates"][best]["values"])
    record["direction"] = "higher" if higher else "lower"


def choose(plan: TuningPlan) -> list[dict[str, Any]]:
    """Every arm's tuning record from its tuning cells now (validation only): runs, means, `chosen` or why."""
    records = []
    for arm in plan.arms:
        record: dict[str, Any] = {
            "augment": arm.augment,
            "train_size": arm.train_size,
            "reads": list(arm.reads),
            "tuned": arm.tuned,
            "tuning_runs": len(arm.cells(plan.tune_seeds)),
            "candidates": [],
            "chosen": dict(arm.candidates[0]),  # an arm of one candidate runs it; a tuned arm's is decided
        }
        records.append(record)
        if len(arm.candidates) < 2:
            record["candidates"] = [{"values": dict(arm.candidates[0]), "runs": [], "mean": None}]
            continue
        for candidate in arm.candidates:
            runs = []
            for seed in plan.tune_seeds:
                cell = GridCell(arm.augment, arm.train_size, seed, candidate, tuning=True)
                result = _cell_result(plan.folder / cell.name, plan.runs[cell].config, _budget(plan))
                runs.append({"seed": seed, "cell": cell.name, **result})
            record["candidates"].append({"values": dict(candidate), "runs": runs, "mean": None})
        _decide(record, plan.folder)
    return records


def read_tuning_record(root: Path) -> dict[str, Any] | None:
    """ROOT/tuning.json; None where there is none, or it cannot be read as a list of arms."""
    record = read_json_object(Path(root) / TUNING_FILE)
    if record is None or not isinstance(record.get("arms"), list):
        return None
    record["arms"] = [arm for arm in record["arms"] if isinstance(arm, dict)]
    return record


def write_tuning_record(plan: TuningPlan, choices: Sequence[dict[str, Any]], seeds: Sequence[int]) -> Path:
    """`ROOT/tuning.json`: each arm's candidates, seeds, budget, numbers and choice (others' arms kept)."""
    budget = _budget(plan)
    arms = [{**record, "tune_seeds": list(plan.tune_seeds), "budget": budget} for record in choices]
    earlier = read_tuning_record(plan.root) or {"arms": []}
    named = {(arm["augment"], arm["train_size"]) for arm in arms}
    kept = [arm for arm in earlier["arms"] if (arm.get("augment"), arm.get("train_size")) not in named]
    earlier_seeds = earlier.get("seeds") if isinstance(earlier.get("seeds"), list) else []
    record = {
        "split": "val",
        "weights": "final",
        "tune_seeds": plan.tune_seeds,
        "seeds": sorted({*seeds, *(seed for seed in earlier_seeds if isinstance(seed, int))}),
        "budget": budget,
        "arms": kept + arms,
    }
    path = plan.root / TUNING_FILE
    write_file_atomically(path, json.dumps(record, indent=2) + "\n")
    return path


def refresh_tuning_record(root: Path) -> None:
    """Undecided arms of `ROOT/tuning.json` choose again (array tasks end in any order); a choice is kept."""
    record = read_tuning_record(root)
    folder, changed = Path(root) / TUNING_DIR, False
    for arm in record["arms"] if record is not None else []:
        if not arm.get("tuned") or arm.get("chosen") is not None:
            continue
        budget = arm.get("budget") or record.get("budget") or {}
        for candidate in arm["candidates"]:
            for index, run in enumerate(candidate["runs"]):
                if "status" in run:
                    fresh = {"seed": run.get("seed"), "cell": run["cell"]}
                    fresh.update(_cell_result(folder / run["cell"], None, budget))
                    changed |= fresh != run
                    candidate["runs"][index] = fresh
        _decide(arm, folder)
    if changed:
        write_file_atomically(Path(root) / TUNING_FILE, json.dumps(record, indent=2) + "\n")


def final_cells(
    shared: RunConfig, grid: GridPlan, choices: Sequence[dict[str, Any]]
) -> tuple[list[GridCell], dict[GridCell, ResolvedRun], dict[str, str]]:
    """The final cells with each arm's choice, in index order; their runs; the undecided (kept) and why."""
    by_arm = {(record["augment"], record["train_size"]): record for record in choices}
    cells, runs, undecided = [], {}, {}
    for cell in grid.cells:
        record = by_arm[cell.augment, cell.train_size]
        if len(record["candidates"]) < 2:
            cells.append(cell)
            runs[cell] = grid.runs[cell]
        elif record["chosen"] is None:
            cells.append(cell)
            undecided[cell.name] = str(record.get("problem"))
        else:
            chosen = replace(cell, options=tuple(record["chosen"].items()))
            cells.append(chosen)
            runs[chosen] = resolve_cell(shared, grid.root, chosen)
    return cells, runs, undecided

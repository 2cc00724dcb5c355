"""Tuning a grid's arms on the validation split before their final runs: candidates, choice, tuning.json.

A grid in which a tunable option (one an augmentation's options declare `tunable`) lists several candidates
(`--augment-p 0.1,0.25`, `--diffaug-policy "color,translation,cutout|translation,cutout"`) and which names
`--tune-seeds` runs in two stages. Stage 1 runs, per arm (an augment at a train size), every combination of
the candidates of the tunable options that arm reads, once per tune seed, in `ROOT/tuning/`; these runs
evaluate on the validation split only (`--no-test-split`). The candidate with the best mean validation
headline of the final weights (`val/fd_classifier` or `val/fid_inception`) is the arm's choice. Stage 2 runs
each arm's choice with
the grid's seeds as its ordinary cells, the only runs evaluated on the test split. An arm with one candidate
(it reads no tunable option, or was given no list for those it reads) has nothing to choose and runs no tuning
cell. `ROOT/tuning.json` records every arm's candidates, their validation numbers per tune seed and the
choice, written whenever tuning cells have run and brought up to date from their folders by every summary;
the report's "Tuning (validation split)" section is made from it.
"""

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
from lightning_genae.experiment.ablation.grid import (
    FAILED_FILE,
    TUNING_DIR,
    TUNING_FILE,
    GridCell,
    GridPlan,
    check_unique,
    finished_run_conflicts,
    read_summary,
    resolve_cell,
    summary_config,
    train_size_label,
)
from lightning_genae.experiment.config import RunConfig, flag
from lightning_genae.experiment.resolve import ResolvedRun
from lightning_genae.experiment.run_lock import live_lock_owner
from lightning_genae.metrics.names import Direction, try_parse
from lightning_genae.run_files import started_run_files

__all__ = [
    "TUNING_FILE",
    "ArmChoice",
    "TuningArm",
    "TuningPlan",
    "candidate_separators",
    "candidate_texts",
    "check_tuning_request",
    "choose",
    "final_cells",
    "plan_tuning",
    "refresh_tuning_record",
    "split_candidates",
    "write_tuning_record",
]


def candidate_separators(option: str) -> str:
    """`|` separates the candidates of every tunable option; a number's also take commas (`0.1,0.25`).

    A text option's own value may be a comma list (`--diffaug-policy color,translation`), so only `|` can
    separate its candidates.
    """
    kind = augmentation_options()[option][0]
    return "|," if {int, float} & {kind, *typing.get_args(kind)} else "|"


def candidate_texts(option: str, text: str) -> list[str]:
    """The candidates a command-line value of `option` lists, as text (one for a plain value)."""
    pattern = "[" + re.escape(candidate_separators(option)) + "]"
    return [item.strip() for item in re.split(pattern, text) if item.strip()]


def split_candidates(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(`values` without candidate lists, each tunable option given several values -> its candidates).

    `values` are the command line's or the config file's, as the parser reads them: a list where several
    candidates are given (`--augment-p 0.1,0.25`, a YAML list).
    """
    rest = dict(values)
    lists: dict[str, list[Any]] = {}
    for option in tunable_options():
        if values.get(option) is None:
            continue
        candidates = values[option] if isinstance(values[option], list) else [values[option]]
        if len(candidates) > 1:
            check_unique(candidates, f"{flag(option)} candidate list")
            lists[option] = candidates
            del rest[option]
        elif candidates:
            rest[option] = candidates[0]
    return rest, lists


def _shown(values: Sequence[Any], option: str) -> str:
    return candidate_separators(option)[-1].join(str(value) for value in values)


def check_tuning_request(candidates: Mapping[str, Sequence[Any]], tune_seeds: Sequence[int] | None) -> None:
    """Candidate lists and `--tune-seeds` come together: each means nothing without the other."""
    if candidates and tune_seeds is None:
        option, values = next(iter(candidates.items()))
        raise ConfigError(
            f"{flag(option)} {_shown(values, option)} lists candidates to tune; add --tune-seeds S (seeds "
            "other than --seeds) to choose among them on the validation split, or give one value"
        )
    if tune_seeds is not None and not candidates:
        raise ConfigError(
            "--tune-seeds tunes a grid's candidate lists, and none was given; list candidates "
            "(e.g. --augment-p 0.1,0.25) or drop --tune-seeds"
        )


Candidate = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class TuningArm:
    """One arm of a tuning grid, an augment at a train size, and the candidates it chooses among.

    Each candidate gives a value to every tunable option the arm reads (`reads`), those without a list
    included, so that a candidate's folder name says all it ran with.
    """

    augment: str
    train_size: int | None
    reads: tuple[str, ...]
    candidates: tuple[Candidate, ...]

    @property
    def name(self) -> str:
        return f"{self.augment}-ts{train_size_label(self.train_size)}"

    @property
    def tuned(self) -> dict[str, list[Any]]:
        """option -> its candidate values, for the options with several (an option that only some
        candidates read, such as a ratio of one policy, counts only the values it is read with)."""
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
    shared: RunConfig,
    grid: GridPlan,
    candidates: Mapping[str, Sequence[Any]],
    tune_seeds: Sequence[int],
) -> TuningPlan:
    """Every arm's candidates and tuning cells, each resolved (so a bad candidate fails before training).

    `shared` holds the grid's common options without the candidate lists; `grid` is its plan of final cells.
    """
    check_unique(tune_seeds, "--tune-seeds")
    # A seed that chose an arm's options would score them too: its final run is the chosen candidate's
    # tuning run, so the row would keep the luck of the draw that won the choice.
    shared_seeds = sorted(set(tune_seeds) & {cell.seed for cell in grid.cells})
    if shared_seeds:
        listed = ",".join(map(str, shared_seeds))
        raise ConfigError(
            f"--tune-seeds {listed} {agree(shared_seeds, 'is', 'are')} also a seed of the grid's final runs "
            "(--seeds, or --seed): the run that chose an arm's options would also report them, and its row "
            "would keep the draw that won the choice; tune with other seeds"
        )
    arms: list[TuningArm] = []
    for cell in grid.cells:
        if any((arm.augment, arm.train_size) == (cell.augment, cell.train_size) for arm in arms):
            continue
        combos = _arm_candidates(shared, grid.root, cell, grid.runs[cell].augment.options, candidates)
        reads = tuple(option for option in tunable_options() if any(option in dict(c) for c in combos))
        arms.append(TuningArm(cell.augment, cell.train_size, reads, combos))
    read_somewhere = {option for arm in arms for option in arm.reads}
    stray = [option for option in candidates if option not in read_somewhere]
    if stray:
        flags = ", ".join(flag(option) for option in stray)
        raise ConfigError(
            f"{flags} {agree(stray, 'is', 'are')} tuned, but no --augment of this grid reads "
            f"{agree(stray, 'it', 'them')}; drop {agree(stray, 'it', 'them')} or add an augmentation "
            f"that reads {agree(stray, 'it', 'them')}"
        )
    cells = [cell for arm in arms for cell in arm.cells(tune_seeds)]
    runs = {cell: resolve_cell(shared, grid.root, cell) for cell in cells}
    return TuningPlan(grid.root, arms, list(tune_seeds), cells, runs)


def _arm_candidates(
    shared: RunConfig,
    root: Path,
    cell: GridCell,
    used: Mapping[str, Any],
    candidates: Mapping[str, Sequence[Any]],
) -> tuple[Candidate, ...]:
    """The distinct candidates of the arm of `cell`, each as the values of the tunable options it reads.

    Every combination of the candidate lists (and of the arm's values, `used`, for options without one) is
    resolved: what an arm reads may depend on another option's value (an option read only in some mode),
    and combinations that differ only in options the arm ignores are one candidate.
    """
    tunable = tunable_options()
    considered = [option for option in tunable if option in used or option in candidates]
    listed = [candidates.get(option, [used.get(option)]) for option in considered]
    found: dict[Candidate, None] = {}
    for combo in itertools.product(*listed):
        given = tuple((option, value) for option, value in zip(considered, combo, strict=True))
        read = resolve_cell(shared, root, replace(cell, options=given)).augment.options
        found.setdefault(tuple((option, read[option]) for option in tunable if option in read))
    return tuple(found)


@dataclass(frozen=True)
class ArmChoice:
    """What an arm's tuning gave: the chosen candidate (None: undecided), why not, and its record."""

    arm: TuningArm
    chosen: Candidate | None
    # Why there is no choice: tuning cells not finished, or no candidate finished every tune seed.
    problem: str | None
    record: dict[str, Any]


_BUDGET = ("max_steps", "max_epochs")


def _cell_result(
    run_dir: Path, config: RunConfig | None, budget: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`{"value", "metric"}` of a finished tuning cell, `{"error"}` of a failed one, else `{"status"}`.

    `config`: what the grid asks of the cell, so that a run with other options is not taken for it; without
    it (a summary, which knows no command) only the grid's training budget `budget` is checked.
    """
    if (run_dir / FAILED_FILE).is_file():
        try:
            error = json.loads((run_dir / FAILED_FILE).read_text(encoding="utf-8")).get("error")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            error = None
        return {"error": str(error or "failed (unreadable failed.json)")}
    summary = read_summary(run_dir)
    if summary is None:
        if live_lock_owner(run_dir) is not None:
            return {"status": "running"}
        return {"status": "unfinished" if started_run_files(run_dir) else "missing"}
    stored = summary_config(summary)
    if config is not None:
        conflicts = finished_run_conflicts(summary, config)
        if conflicts:
            return {
                "error": f"holds a run with other options ({'; '.join(conflicts)}); re-run with --overwrite"
            }
        budget = {name: getattr(config, name) for name in _BUDGET}
    if any(stored.get(name) != value for name, value in (budget or {}).items()):
        return {"status": "unfinished"}  # finished at another budget: the grid command continues it
    metric = summary.get("headline_metric")
    value = summary["final_metrics"].get(metric) if isinstance(metric, str) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return {"error": f"no finite validation headline ({metric}) in its summary.json"}
    return {"value": float(value), "metric": metric}


def _choose_arm(plan: TuningPlan, arm: TuningArm) -> ArmChoice:
    record: dict[str, Any] = {
        "augment": arm.augment,
        "train_size": arm.train_size,
        "reads": list(arm.reads),
        "tuned": arm.tuned,
        "tuning_runs": len(arm.cells(plan.tune_seeds)),
        "candidates": [],
        "chosen": None,
    }
    if len(arm.candidates) < 2:
        only = arm.candidates[0]
        record["candidates"] = [{"values": dict(only), "runs": [], "mean": None}]
        record["chosen"] = dict(only)
        return ArmChoice(arm, only, None, record)
    for candidate in arm.candidates:
        runs = []
        for seed in plan.tune_seeds:
            cell = GridCell(arm.augment, arm.train_size, seed, candidate, tuning=True)
            result = _cell_result(plan.folder / cell.name, plan.runs[cell].config)
            runs.append({"seed": seed, "cell": cell.name, **result})
        record["candidates"].append({"values": dict(candidate), "runs": runs, "mean": None})
    best = _decide(record, plan.folder)
    if best is None:
        return ArmChoice(arm, None, record["problem"], record)
    return ArmChoice(arm, arm.candidates[best], None, record)


def _decide(record: dict[str, Any], folder: Path) -> int | None:
    """An arm's choice from the runs its tuning `record` holds per candidate: sets each candidate's mean, the
    metric, and the choice with its direction or the problem; returns the chosen candidate's index."""
    means: list[float | None] = []
    pending: list[str] = []
    metrics: set[str] = set()
    for candidate in record["candidates"]:
        runs = candidate["runs"]
        for run in runs:
            if "status" in run:
                pending.append(f"{run['cell']} ({run['status']})")
            metrics.update([run["metric"]] if "metric" in run else [])
        values = [run["value"] for run in runs if "value" in run]
        candidate["mean"] = sum(values) / len(values) if values and len(values) == len(runs) else None
        means.append(candidate["mean"])
    metric = min(metrics) if metrics else None
    record.update(chosen=None, metric=metric)
    record.pop("problem", None)
    record.pop("direction", None)
    scored = [(mean, index) for index, mean in enumerate(means) if mean is not None]
    problem = None
    if pending:
        problem = f"its tuning is not finished ({', '.join(pending)})"
    elif len(metrics) > 1:
        problem = f"its tuning runs report different headlines ({', '.join(sorted(metrics))})"
    elif not scored:
        problem = f"no tuning candidate finished every tune seed (see {folder}/*/failed.json)"
    if problem is not None:
        record["problem"] = problem
        return None
    parsed = try_parse(metric) if metric else None
    higher = parsed is not None and parsed.direction is Direction.HIGHER
    # The best mean; on a tie the earlier candidate, so the choice never depends on anything but the numbers.
    best = min(scored, key=lambda item: (-item[0] if higher else item[0], item[1]))[1]
    record["chosen"] = dict(record["candidates"][best]["values"])
    record["direction"] = "higher" if higher else "lower"
    return best


def choose(plan: TuningPlan) -> list[ArmChoice]:
    """Every arm's choice from what its tuning cells' folders hold now (validation numbers only)."""
    return [_choose_arm(plan, arm) for arm in plan.arms]


def write_tuning_record(plan: TuningPlan, choices: Sequence[ArmChoice], seeds: Sequence[int]) -> Path:
    """`ROOT/tuning.json`: what every arm was tuned over, each candidate's validation numbers, the choices.

    Its "budget" key holds the tuning runs' training budget, so that a summary can bring the record up to
    date from the tuning cells' folders (refresh_tuning_record) without the grid's command.
    """
    configs = [resolved.config for resolved in plan.runs.values()][:1]
    budget = {name: getattr(config, name) for config in configs for name in _BUDGET}
    # Each arm keeps the tune seeds and budget it was tuned with: a later grid into the same folder may tune
    # other arms otherwise, and its record must not lose this one's.
    arms = [{**choice.record, "tune_seeds": list(plan.tune_seeds), "budget": budget} for choice in choices]
    path = plan.root / TUNING_FILE
    earlier = read_tuning_record(plan.root)
    if earlier is not None:
        # Arms an earlier grid into this folder tuned and this command did not name keep their record.
        named = {_arm_key(arm) for arm in arms}
        kept = [
            {"tune_seeds": earlier.get("tune_seeds"), "budget": earlier.get("budget"), **arm}
            for arm in earlier["arms"]
            if isinstance(arm, dict) and _arm_key(arm) not in named
        ]
        arms = kept + arms
        earlier_seeds = earlier.get("seeds")
        if isinstance(earlier_seeds, list):
            seeds = sorted({*seeds, *(seed for seed in earlier_seeds if isinstance(seed, int))})
    record = {
        "split": "val",
        "weights": "final",
        "tune_seeds": plan.tune_seeds,
        "seeds": list(seeds),
        "budget": budget,
        "arms": arms,
    }
    write_file_atomically(path, json.dumps(record, indent=2) + "\n")
    return path


def read_tuning_record(root: Path) -> dict[str, Any] | None:
    """ROOT/tuning.json with its list of arms as written; None where there is none, or it cannot be read as
    one."""
    try:
        record = json.loads((Path(root) / TUNING_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("arms"), list):
        return None
    return record


def _arm_key(arm: Mapping[str, Any]) -> tuple[str, str]:
    return (str(arm.get("augment")), str(arm.get("train_size")))


def refresh_tuning_record(root: Path) -> None:
    """Bring `ROOT/tuning.json` up to date with the tuning cells' folders as they are now.

    An arm still waiting for its tuning has each of its pending runs read again from its folder and its
    choice made again; an arm that has chosen keeps its choice (its final cells ran with it). A summary calls
    this, so tuning cells that finished after the record was last written (array tasks finish in any order)
    are never reported missing. A tuning.json that cannot be read is left as it is.
    """
    path = Path(root) / TUNING_FILE
    record = read_tuning_record(root)
    if record is None:
        return
    record_budget = record.get("budget") if isinstance(record.get("budget"), dict) else {}
    folder = Path(root) / TUNING_DIR
    changed = False
    for arm in record["arms"]:
        if not _is_waiting_arm(arm):
            continue
        # The arm's own budget (an earlier version's record has the grid's alone).
        budget = arm["budget"] if isinstance(arm.get("budget"), dict) else record_budget
        fresh_runs = 0
        for candidate in arm["candidates"]:
            for index, run in enumerate(candidate["runs"]):
                if "status" not in run:
                    continue
                result = _cell_result(folder / run["cell"], None, budget)
                fresh = {"seed": run.get("seed"), "cell": run["cell"], **result}
                if fresh != run:
                    candidate["runs"][index] = fresh
                    fresh_runs += 1
        if fresh_runs:
            _decide(arm, folder)
            changed = True
    if changed:
        write_file_atomically(path, json.dumps(record, indent=2) + "\n")


def _is_waiting_arm(arm: Any) -> bool:
    """An arm of a tuning record that tunes, has not chosen, and lists its runs as the grid wrote them."""
    if not isinstance(arm, dict) or not arm.get("tuned") or arm.get("chosen") is not None:
        return False
    candidates = arm.get("candidates")
    return isinstance(candidates, list) and all(
        isinstance(candidate, dict)
        and isinstance(candidate.get("values"), dict)
        and isinstance(candidate.get("runs"), list)
        and candidate["runs"]
        and all(_is_run_entry(run) for run in candidate["runs"])
        for candidate in candidates
    )


def _is_run_entry(run: Any) -> bool:
    """A tuning run as the record lists it: its cell's name, and a number and metric name when it has one."""
    if not isinstance(run, dict) or not isinstance(run.get("cell"), str):
        return False
    value, metric = run.get("value", 0.0), run.get("metric", "")
    return isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(metric, str)


def final_cells(
    shared: RunConfig, grid: GridPlan, choices: Sequence[ArmChoice]
) -> tuple[list[GridCell], dict[GridCell, ResolvedRun], dict[str, str]]:
    """The grid's final cells with each tuned arm's choice, in index order; their runs; undecided cells.

    An arm that tuned nothing keeps its cells as planned. A cell of an undecided arm stays as planned in the
    list (its index still names it) and is named in the third value with the reason it cannot run.
    """
    by_arm = {(c.arm.augment, c.arm.train_size): c for c in choices}
    cells: list[GridCell] = []
    runs: dict[GridCell, ResolvedRun] = {}
    undecided: dict[str, str] = {}
    for cell in grid.cells:
        choice = by_arm[(cell.augment, cell.train_size)]
        if len(choice.arm.candidates) < 2:
            cells.append(cell)
            runs[cell] = grid.runs[cell]
        elif choice.chosen is None:
            cells.append(cell)
            undecided[cell.name] = str(choice.problem)
        else:
            chosen = replace(cell, options=choice.chosen)
            cells.append(chosen)
            runs[chosen] = resolve_cell(shared, grid.root, chosen)
    return cells, runs, undecided

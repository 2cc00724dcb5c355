"""When a cell's folder holds another experiment than the cell: a run that differs in what decides its
numbers is refused rather than averaged with the grid's cells or replaced unasked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from lightning_genae.cache import file_sha256
from lightning_genae.errors import RunFolderRefused, describe_error
from lightning_genae.experiment.config import RunConfig, comparable, flag, resume_conflicts
from lightning_genae.experiment.overwrite import put_back_a_stopped_overwrite
from lightning_genae.experiment.run_folder import read_summary
from lightning_genae.experiment.run_lock import live_lock_owner
from lightning_genae.models import unread_by_run
from lightning_genae.run_files import CHECKPOINT_DIR, CONFIG_FILE, FAILED_FILE, last_checkpoint

# Options a resume may change that still decide a finished run's numbers (a preempted grid re-run with
# another --lr would resume its cells half-way at the new rate). The budget is continued instead.
DEFINING_A_FINISHED_RUN = ("lr", "eval_every", "test_split", "precision", "data_dir")
BUDGETS = ("max_steps", "max_epochs")
# Options whose value makes a schedule run over the budget: p or the learning rate taken to 0 at its end.
_SCHEDULES_OVER_THE_BUDGET = {"augment_anneal": True, "lr_schedule": "cosine"}


def json_object(record: Mapping[str, Any], key: str) -> dict[str, Any]:
    """`record[key]` where it is a JSON object, else empty (a record edited by hand)."""
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def summary_config(summary: Mapping[str, Any]) -> dict[str, Any]:
    return json_object(summary, "config")


def augmenter_sha256(summary: Mapping[str, Any]) -> str | None:
    """The SHA-256 of the --augment-ckpt file a finished run's augmenter was read from, if any."""
    sha256 = json_object(json_object(summary, "augmentation"), "augmenter").get("sha256")
    return sha256 if isinstance(sha256, str) else None


def budget_changes(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The budgets (--max-steps, --max-epochs) `wanted` changes from the run's `stored` ones."""
    return [name for name in BUDGETS if name in stored and name in wanted and stored[name] != wanted[name]]


def run_conflicts(
    stored: Mapping[str, Any],
    config: RunConfig,
    where: str = "the run there",
    defining: Sequence[str] = DEFINING_A_FINISHED_RUN,
) -> list[str]:
    """How the run that recorded `stored` differs from `config` in what a grid may not continue it with; a
    schedule run over its budget is not continued to another, as no fresh cell of that budget would be."""
    wanted = config.to_dict()
    unread = unread_by_run(str(stored.get("model", "")), stored) | unread_by_run(str(wanted["model"]), wanted)
    conflicts = resume_conflicts(stored, wanted, unread, stored_in=where)
    conflicts += [
        f"{flag(name)} {wanted[name]} ({where}: {stored[name]})"
        for name in defining
        if name not in unread
        and name in stored
        and name in wanted
        and comparable(name, stored[name]) != comparable(name, wanted[name])
    ]
    schedules = [
        flag(name) + ("" if value is True else f" {value}")
        for name, value in _SCHEDULES_OVER_THE_BUDGET.items()
        if stored.get(name) == value
    ]
    if schedules:
        conflicts += [
            f"{flag(name)} {wanted[name]} ({where}: {stored[name]}, the budget its {' and '.join(schedules)} "
            "schedule runs over)"
            for name in budget_changes(stored, wanted)
        ]
    return conflicts


def unfinished_run_conflicts(stored: Mapping[str, Any], config: RunConfig) -> list[str]:
    """`run_conflicts` of an unfinished run, whose data folder may move (its data is compared by content)."""
    defining = [name for name in DEFINING_A_FINISHED_RUN if name != "data_dir"]
    return run_conflicts(stored, config, defining=defining)


def finished_run_conflicts(
    summary: Mapping[str, Any], config: RunConfig, run_dir: Path | None = None
) -> list[str]:
    """How the finished run `summary` differs from `config`; an --augment-ckpt file is compared by content."""
    stored = summary_config(summary)
    conflicts = []
    recorded, given = augmenter_sha256(summary), config.plugin_options.get("augment_ckpt")
    if recorded is not None and given:
        stored = {name: value for name, value in stored.items() if name != "augment_ckpt"}
        now = file_sha256(given) if Path(given).is_file() else recorded  # a missing file is the run's refusal
        if now != recorded:
            conflicts.append(f"--augment-ckpt {given} (its contents are not the finished run's augmenter)")
    conflicts += run_conflicts(stored, config, where="finished run")
    return conflicts + (_budget_conflicts(stored, config.to_dict(), run_dir) if run_dir is not None else [])


def _budget_conflicts(stored: Mapping[str, Any], wanted: Mapping[str, Any], run_dir: Path) -> list[str]:
    """A finished cell continues only to a longer budget of the same kind: a shorter one would relabel it."""
    has_checkpoint = last_checkpoint(run_dir).is_file()

    def longer(old: Any, new: Any) -> bool:
        return all(type(value) is int and value > 0 for value in (old, new)) and new > old

    why = "only a longer budget continues it" if has_checkpoint else f"without {CHECKPOINT_DIR}/last.ckpt"
    return [
        f"{flag(name)} {wanted[name]} (finished run: {stored[name]}; {why})"
        for name in budget_changes(stored, wanted)
        if not has_checkpoint or not longer(stored[name], wanted[name])
    ]


def other_options(run_dir: Path, conflicts: Sequence[str]) -> str:
    """Why a cell is left to the run its folder holds: a run of other options is never replaced unasked."""
    return (
        f"{run_dir} holds a run with other options ({'; '.join(conflicts)}); re-run the grid with "
        "--overwrite or another --output"
    )


def cell_conflicts(run_dir: Path, config: RunConfig) -> list[str]:
    """Why the run in a cell's folder (finished, to resume, or running) is not the cell `config` asks for."""
    put_back_a_stopped_overwrite(run_dir)
    summary = read_summary(run_dir)
    if summary is not None:
        return finished_run_conflicts(summary, config, run_dir)
    resumed = last_checkpoint(run_dir).is_file() and not (run_dir / FAILED_FILE).is_file()
    if not resumed and live_lock_owner(run_dir) is None:
        return []
    try:
        recorded = yaml.safe_load((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []  # a running run yet to write it; a resumed one is compared by its last.ckpt
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        return [f"its {CONFIG_FILE} is unreadable ({describe_error(error)}), so its options are unknown"]
    if not isinstance(recorded, dict):
        return [f"its {CONFIG_FILE} holds no options, so they are unknown"]
    return unfinished_run_conflicts(recorded, config)


def refuse_finished_runs_with_other_options(cells: Sequence[tuple[Path, RunConfig]], overwrite: bool) -> None:
    """Before any cell trains, refuse a cell holding a run of other options (with `overwrite`: a live one)."""
    clashing = [
        (folder, conflicts)
        for folder, config in cells
        if (not overwrite or live_lock_owner(folder) is not None)
        and (conflicts := cell_conflicts(folder, config))
    ]
    if clashing:
        folder, conflicts = clashing[0]
        raise RunFolderRefused(
            f"{len(clashing)} of the {len(cells)} cells hold runs with other options (the first, {folder}: "
            f"{'; '.join(conflicts)}); re-run the grid with --overwrite or another --output"
        )

"""ablation.csv and ablation.md: a row per run, and per (train size, augment) the mean ± std over seeds of the
test metrics, for the final weights and the checkpoint chosen on validation, with the tuning stage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_genae.cache import write_file_atomically
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.ablation.cells import TUNING_DIR, train_size_label
from lightning_genae.experiment.ablation.runs import (
    ITERATIONS_TRAINED,
    CellRun,
    describe_progress,
    not_finished,
    number,
    row_disagreement,
    seed_text,
    table_disagreement,
    train_size_key,
)
from lightning_genae.experiment.ablation.tuning import read_tuning_record
from lightning_genae.metrics.feature_set import feature_metric_keys
from lightning_genae.metrics.names import KINDS, SERIES_SCORES, Direction, MetricName, direction, try_parse
from lightning_genae.spread import mean_std

if TYPE_CHECKING:
    import pandas as pd

# Prefix of the ablation.csv columns that describe the checkpoint chosen on validation.
SELECTED_PREFIX = "selected/"
# The arm every other is compared with: its rows come first.
BASELINE = "none"
# Fewer finished seeds than this in a row, and the report warns that its order is not a ranking.
SEEDS_TO_RANK = 3
# The test reconstruction error every reconstructing family reports (on the models' [-1, 1] scale).
RECONSTRUCTION_ERROR = "test/mse"


def _selected_columns(run: CellRun) -> dict[str, Any]:
    """`selected/step`, `selected/<validation metric>`, `selected/test/...` of a run's chosen checkpoint."""
    record, chosen_on = run.selected, run.selected.get("chosen_on")
    columns = {
        "step": record.get("step"),
        **({chosen_on: record.get(chosen_on)} if isinstance(chosen_on, str) else {}),
    }
    columns.update({name: value for name, value in run.selected_metrics.items() if name.startswith("test/")})
    return {SELECTED_PREFIX + name: value for name, value in columns.items() if value is not None}


def write_csv(path: Path, runs: list[CellRun]) -> None:
    """A row per run: identity and status, test metrics and its chosen checkpoint's, sample counts."""
    import pandas as pd

    rows = [
        {
            "cell": run.cell,
            "augment": run.augment,
            "train_size": train_size_label(run.train_size),
            "seed": run.seed,
            "status": run.status,
            **{key: run.summary.get(key) for key in ("global_step", "wall_time_s")},
            "headline_metric": run.headline,
            **{name: value for name, value in run.final_metrics.items() if name.startswith("test/")},
            **_selected_columns(run),
            **{key: run.test_evaluation.get(key) for key in ("n_real", "n_fake", "backbone")},
            "device": run.summary.get("device"),
            "error": run.error,
        }
        for run in runs
    ]
    # Object columns keep each value as Python writes it (an int stays `6`, a float its shortest repr).
    frame = pd.DataFrame(rows, dtype=object)
    identity = "cell augment train_size seed status global_step wall_time_s headline_metric".split()
    metrics = sorted(name for name in frame if name.startswith("test/"))
    # The chosen checkpoint's step first, then the validation value it was chosen on, then its test metrics.
    selected = sorted(
        (name for name in frame if name.startswith(SELECTED_PREFIX)),
        key=lambda name: (
            name != f"{SELECTED_PREFIX}step",
            not name.startswith(f"{SELECTED_PREFIX}val/"),
            name,
        ),
    )
    frame = frame.reindex(
        columns=[*identity, *metrics, *selected, "n_real", "n_fake", "backbone", "device", "error"]
    )
    write_file_atomically(path, frame.to_csv(index=False, lineterminator="\n"))


def _table_metrics(runs: list[CellRun], headline: str | None) -> list[str]:
    """The report's columns: the headline where it is the family's own objective, the ranking image metrics
    by backbone (the headline's first), the series scores, and else the reconstruction error."""
    present = {name for run in runs if run.ok for name in run.final_metrics if name.startswith("test/")}
    parsed = try_parse(headline) if headline else None
    first = parsed.backbone if parsed else None
    backbones = sorted(
        {p.backbone for p in map(try_parse, present) if p is not None and p.backbone},
        key=lambda backbone: (backbone != first, backbone),
    )
    ranked = [key for key in feature_metric_keys() if KINDS[key].direction is not Direction.NONE]
    own_objective = headline in present and first is None
    columns = [headline] if own_objective else []
    columns += [
        name
        for backbone in backbones
        for key in ranked
        if (name := MetricName.generative(key, backbone, "test").format()) in present
    ]
    columns += [name for name in (f"test/{score}" for score in SERIES_SCORES) if name in present]
    return columns + ([RECONSTRUCTION_ERROR] if not own_objective and RECONSTRUCTION_ERROR in present else [])


def _stats(column: pd.Series) -> str:
    """A row's mean ± sample std of one metric, saying over how many runs where some finished ones lack it."""
    values = column.dropna().tolist()
    if not values:
        return "n/a"
    return mean_std(values) + ("" if len(values) == len(column) else f" (n={len(values)})")


def _md_row(*cells: Any) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"


def _group_table(
    runs: list[CellRun],
    metrics: list[str],
    headline: str | None,
    metrics_of: Callable[[CellRun], dict[str, Any]],
    arm_notes: Mapping[str, str],
    arm_choices: Mapping[str, Mapping[str, Any]],
    chosen_steps: bool = False,
) -> list[str]:
    """A Markdown row per (train size, augment): baseline, then best mean; no mean if not one experiment."""
    import pandas as pd

    columns = list(dict.fromkeys([*metrics, *([headline] if headline else [])]))
    ok = pd.DataFrame(
        [
            {"row": run.row, **{name: number(metrics_of(run).get(name)) for name in columns}}
            for run in runs
            if run.ok
        ],
        columns=["row", *columns],
    )
    stats = ok.groupby("row")[metrics].agg(_stats) if metrics else None
    means = ok.groupby("row")[headline].mean().dropna() if headline else pd.Series(dtype=float)
    higher = headline is not None and direction(headline) is Direction.HIGHER
    rows: dict[str, list[CellRun]] = {}
    for run in runs:
        rows.setdefault(run.row, []).append(run)

    def order(row: str) -> tuple[Any, ...]:
        first = rows[row][0]
        mean = means.get(row)
        ranked = (0, -mean if higher else mean) if mean is not None else (1, 0.0)
        return (train_size_key(first.train_size), first.augment != BASELINE, *ranked, first.augment or "?")

    header = ["augment", "train size", "n", "failed", *(m.removeprefix("test/") for m in metrics)]
    header += ["chosen steps"] * chosen_steps + ["notes"]
    lines = [_md_row(*header), "|" + "|".join(["---", "---", *["---:"] * (len(header) - 3), "---"]) + "|"]
    for row in sorted(rows, key=order):
        group = rows[row]
        ok_runs = sorted((run for run in group if run.ok), key=CellRun.sort_key)
        failures = [run for run in group if run.failed]
        disagreement = row_disagreement(group, arm_choices.get(row))
        if ok_runs and disagreement:
            cells = ["not averaged"] * len(metrics)
        elif ok_runs:
            cells = [stats.at[row, name] for name in metrics] if stats is not None else []
        else:
            cells = ["failed" if failures else "n/a"] * len(metrics)
        if chosen_steps:
            steps = [str(run.selected["step"]) for run in ok_runs if "step" in run.selected]
            cells.append(", ".join(steps) or "n/a")
            notes = [
                f"{seed_text(r.seed)}: no checkpoint chosen on validation"
                for r in ok_runs
                if not r.selected_metrics
            ]
        else:
            notes = [f"{seed_text(r.seed)}: {r.error if r.failed else r.pending}" for r in group if not r.ok]
        notes = "; ".join(note for note in (arm_notes.get(row, ""), disagreement, *notes) if note)
        size = train_size_label(group[0].train_size)
        lines.append(_md_row(group[0].augment or "?", size, len(ok_runs), len(failures), *cells, notes))
    return lines


def _rows_apart(runs: list[CellRun]) -> list[str]:
    """The paragraph saying the table's rows differ in more than their arm and training size, if they do."""
    disagreement = table_disagreement(runs)
    if not disagreement:
        return []
    fix = (
        "run the grid again with --max-steps, so that every arm trains as many iterations"
        if any(trait.startswith(ITERATIONS_TRAINED) for trait in disagreement)
        else "run the grid again into a folder of its own"
    )
    return [
        "",
        "**These rows are not one experiment, so they do not rank against each other:** besides their "
        f"augmentation and training size, their runs differ: {'; '.join(disagreement.values())}. Compare "
        f"only rows that agree on these, or {fix}.",
    ]


def _arm_size(arm: Mapping[str, Any]) -> str:
    size = arm.get("train_size")
    return train_size_label(size if isinstance(size, int) else None)


def arm_choices(tuning: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Table row -> the values a tuned arm chose for the options it tuned, which all its runs must have."""
    return {
        f"{arm.get('augment')}-ts{_arm_size(arm)}": {
            name: value for name, value in arm["chosen"].items() if name in arm["tuned"]
        }
        for arm in (tuning or {}).get("arms", [])
        if isinstance(arm.get("chosen"), dict) and isinstance(arm.get("tuned"), dict)
    }


def _values_text(values: Any, only: Iterable[str] | None = None) -> str:
    """`augment_p=0.1, augment_noise=0.5` (only the options in `only`, when given)."""
    if not isinstance(values, dict):
        return "?"
    shown = values if only is None else {option: value for option, value in values.items() if option in only}
    return ", ".join(f"{option}={value}" for option, value in shown.items())


def _chosen_note(arm: Mapping[str, Any]) -> str:
    """What a tuned arm runs, for its row of the main tables; empty for an arm that tuned nothing."""
    if not arm.get("tuned"):
        return ""
    if not isinstance(arm.get("chosen"), dict):
        return f"not chosen: {arm.get('problem', 'tuning not finished')}"
    return f"chosen on val: {_values_text(arm['chosen'], arm['tuned'])}"


def _seeds_text(seeds: Any) -> str:
    """`0, 1, 2` from a record's list of seeds; `?` where it holds none."""
    return (", ".join(map(str, seeds)) if isinstance(seeds, list) else "") or "?"


_TUNING_COLUMNS = "augment|train size|tuned over|candidates|tuning runs|chosen|validation mean per candidate"


def _tuning_lines(root: Path, tuning: Mapping[str, Any] | None) -> list[str]:
    """The "Tuning (validation split)" section: per arm what was tuned over what, its runs, the choice."""
    title = ["## Tuning (validation split)", ""]
    if tuning is None:
        if not (root / TUNING_DIR).is_dir():
            return []
        try:
            progress = describe_progress(root / TUNING_DIR)
        except ConfigError as error:
            progress = str(error)
        return [*title, f"No choice made yet; tuning: {progress}.", ""]
    arms = tuning["arms"]
    metric = ", ".join(f"`{name}`" for name in _unique(arm.get("metric") for arm in arms))
    directions = _unique(arm.get("direction") for arm in arms)
    better = f" ({directions[0]} is better)" if len(directions) == 1 else ""
    tune_seeds = {
        f"{arm.get('augment')} ({_arm_size(arm)})": _seeds_text(
            arm.get("tune_seeds", tuning.get("tune_seeds"))
        )
        for arm in arms
        if arm.get("tuned")
    }
    seeds = next(iter(tune_seeds.values()), _seeds_text(tuning.get("tune_seeds")))
    if len(set(tune_seeds.values())) > 1:
        seeds = "; ".join(f"{arm_seeds} for {label}" for label, arm_seeds in tune_seeds.items())
    lines = [
        *title,
        f"Each arm with several candidates trained every candidate with tune seed(s) {seeds} (in "
        f"`{TUNING_DIR}/`; these runs were evaluated on the validation split only, never on the test split), "
        f"then ran the one with the best mean {metric or 'validation headline'}{better} of its final weights "
        f"with seed(s) {_seeds_text(tuning.get('seeds'))} for the tables above.",
        "",
        _md_row(*_TUNING_COLUMNS.split("|")),
        "|---|---|---|---:|---:|---|---|",
    ]
    for arm in arms:
        tuned, candidates = arm.get("tuned") or {}, arm.get("candidates") or []
        if not arm.get("reads"):
            over = "reads no tunable option"
        elif not tuned:
            over = f"nothing (one candidate: {_values_text((candidates or [{}])[0].get('values'))})"
        else:
            over = "; ".join(f"{option}: {' / '.join(map(str, values))}" for option, values in tuned.items())
        scores = []
        for candidate in candidates if tuned else []:
            mean = number(candidate.get("mean"))
            score = (
                f"{_values_text(candidate.get('values'), tuned)}: {'n/a' if mean is None else f'{mean:.4g}'}"
            )
            scores.append(f"**{score}**" if candidate.get("values") == arm.get("chosen") else score)
        row = [arm.get("augment", "?"), _arm_size(arm), over, len(candidates), arm.get("tuning_runs", "?")]
        chosen = _chosen_note(arm).removeprefix("chosen on val: ") or "-"
        lines.append(_md_row(*row, chosen, "; ".join(scores) or "-"))
    # Arms that read no tunable option have nothing to tune: they do not make a budget unequal.
    counts = {str(arm.get("augment")): len(arm.get("candidates") or []) for arm in arms if arm.get("reads")}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{augment} {count}" for augment, count in sorted(counts.items()))
        lines += [
            "",
            f"Unequal tuning: the arms had different numbers of candidates ({listed}); an arm with more "
            "candidates had more chances to look good on validation, which favours it in the tables above.",
        ]
    return [*lines, ""]


def _unique(values: Iterable[Any]) -> list[str]:
    return sorted({str(value) for value in values if value is not None and value != ""})


def _header(root: Path, runs: list[CellRun], headline: str | None, tuned: bool) -> list[str]:
    """What the report's numbers are: metric, backbone, sample counts, budget, device, runs, choice splits."""
    ok_runs = [run for run in runs if run.ok]
    better = direction(headline) if headline is not None else Direction.NONE
    evaluations = [run.test_evaluation for run in ok_runs]
    sizes = _unique(f"n_real={e['n_real']}, n_fake={e['n_fake']}" for e in evaluations if "n_fake" in e)
    backbones = "; ".join(_unique(e.get("backbone") for e in evaluations))
    backbone = f"backbone: {backbones or 'unknown'}; " if backbones or not evaluations else ""
    steps = ", ".join(_unique(run.summary.get("global_step") for run in ok_runs)) or "unknown"
    devices = "; ".join(_unique(run.summary.get("device") for run in ok_runs)) or "unknown"
    pending = f" ({not_finished(runs)})" if not_finished(runs) else ""
    if not ok_runs:
        how = "(no run finished)"
    elif any(run.selected_metrics for run in ok_runs):
        how = "(the best checkpoint is picked on the validation split)"
    else:
        how = "(no run chose a checkpoint on validation: the final weights are the only ones reported)"
    if tuned and ok_runs:
        how += "; tuned arms' options were chosen on the validation split too (see Tuning below)"
    seeds = Counter(run.row for run in ok_runs)
    caution = f" The baseline `{BASELINE}` comes first, then the best mean."
    if seeds and min(seeds.values()) < SEEDS_TO_RANK:
        caution += (
            f" With {min(seeds.values())} finished seed(s) in a row (fewer than {SEEDS_TO_RANK}), that order "
            "is not a ranking: a difference within the ± can reverse with more seeds."
        )
    return [
        f"# Ablation: {root.name}",
        "",
        f"Headline metric: `{headline or 'none'}`{'' if better is Direction.NONE else f' ({better.value})'}; "
        f"{backbone}test evaluation: {'; '.join(sizes) or 'unknown'}; steps per run: {steps}; "
        f"device: {devices}.",
        "",
        f"{len(ok_runs)} of {len(runs)} runs finished{pending}. Every number below is from the test split, "
        f"on which no checkpoint choice was made {how}. Cells are mean ± sample std (ddof=1) over the "
        f"group's finished seeds; failed runs are left out.{caution}",
    ]


def write_md(path: Path, root: Path, runs: list[CellRun], headline: str | None, figure: str) -> None:
    """The grid's Markdown report at `path`, ending with the figure file `figure` (a name beside it)."""
    tuning = read_tuning_record(root)
    notes = {
        f"{arm.get('augment')}-ts{_arm_size(arm)}": _chosen_note(arm)
        for arm in (tuning or {}).get("arms", [])
    }
    choices = arm_choices(tuning)
    metrics = _table_metrics(runs, headline)
    lines = [
        *_header(root, runs, headline, tuning is not None),
        *_rows_apart(runs),
        "",
        "### Final weights",
        "",
        *_group_table(runs, metrics, headline, lambda run: run.final_metrics, notes, choices),
    ]
    if any(run.ok and run.selected_metrics for run in runs):
        chosen_on = "`, `".join(_unique(run.selected.get("chosen_on") for run in runs if run.ok))
        lines += [
            "",
            "### Checkpoint chosen on validation",
            "",
            f"Each run's `best.ckpt`, the checkpoint with the best `{chosen_on}` among the validations "
            "during training (chosen on validation numbers only), evaluated on the test split with the same "
            "seeds and sample counts; `chosen steps` lists its step per seed.",
            "",
            *_group_table(runs, metrics, headline, lambda run: run.selected_metrics, notes, choices, True),
        ]
    lines += ["", *_tuning_lines(root, tuning), f"![validation curves]({figure})", ""]
    write_file_atomically(path, "\n".join(lines))

"""ablation.csv and ablation.md: a row per cell, and per (train size, augment) the mean ± std over seeds
of the test metrics, for the final weights and the checkpoint chosen on validation, with the tuning stage.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lightning_genae.cache import write_file_atomically
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.ablation.grid import TUNING_DIR, train_size_label
from lightning_genae.experiment.ablation.runs import (
    ITERATIONS_TRAINED,
    CellRun,
    as_int,
    describe_progress,
    not_finished,
    number,
    row_disagreement,
    table_disagreement,
    train_size_key,
    unique,
)
from lightning_genae.experiment.ablation.tuning import read_tuning_record
from lightning_genae.metrics.feature_set import feature_metric_keys
from lightning_genae.metrics.names import KINDS, SERIES_SCORES, Direction, MetricName, direction, try_parse
from lightning_genae.spread import mean_std


def _ranked_feature_metrics() -> tuple[str, ...]:
    """Test generative metrics shown in the Markdown table, in this column order, per backbone: those that
    rank models, built-in and registered (kid_std, the spread of kid, has no better side and stays in the
    CSV)."""
    return tuple(key for key in feature_metric_keys() if KINDS[key].direction is not Direction.NONE)


# Prefix of the ablation.csv columns that describe the checkpoint chosen on validation.
SELECTED_PREFIX = "selected/"


def _selected_columns(run: CellRun) -> dict[str, Any]:
    """`selected/step`, `selected/<validation metric>`, `selected/test/...` of a run's chosen checkpoint."""
    record = run.selected
    chosen_on = record.get("chosen_on")
    columns = {"step": record.get("step")}
    if isinstance(chosen_on, str):
        columns[chosen_on] = record.get(chosen_on)
    columns.update({name: value for name, value in run.selected_metrics.items() if name.startswith("test/")})
    return {SELECTED_PREFIX + name: value for name, value in columns.items() if value is not None}


def write_csv(path: Path, runs: list[CellRun]) -> None:
    metric_columns = sorted({name for run in runs for name in run.final_metrics if name.startswith("test/")})
    selected = {run.cell: _selected_columns(run) for run in runs}
    # The step first, then the validation value it was chosen on, then the test metrics.
    selected_columns = sorted(
        {name for columns in selected.values() for name in columns},
        key=lambda name: (
            name != SELECTED_PREFIX + "step",
            not name.startswith(SELECTED_PREFIX + "val/"),
            name,
        ),
    )
    columns = [
        "cell",
        "augment",
        "train_size",
        "seed",
        "status",
        "global_step",
        "wall_time_s",
        "headline_metric",
        *metric_columns,
        *selected_columns,
        "n_real",
        "n_fake",
        "backbone",
        "device",
        "error",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for run in runs:
        test = run.test_evaluation
        row = {
            "cell": run.cell,
            "augment": run.augment or "",
            "train_size": train_size_label(run.train_size),
            "seed": "" if run.seed is None else run.seed,
            "status": run.status,
            "global_step": run.summary.get("global_step", ""),
            "wall_time_s": run.summary.get("wall_time_s", ""),
            "headline_metric": run.headline or "",
            **{name: run.final_metrics.get(name, "") for name in metric_columns},
            **{name: selected[run.cell].get(name, "") for name in selected_columns},
            "n_real": test.get("n_real", ""),
            "n_fake": test.get("n_fake", ""),
            "backbone": test.get("backbone", ""),
            "device": run.summary.get("device", ""),
            "error": run.error or "",
        }
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    write_file_atomically(path, buffer.getvalue())


def _format_stats(values: list[float], n_ok: int) -> str:
    if not values:
        return "n/a"
    text = mean_std(values)
    # Fewer values than ok runs means some runs lack this metric; say how many the mean is over.
    return text if len(values) == n_ok else f"{text} (n={len(values)})"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# The test reconstruction error every reconstructing family reports (on the models' [-1, 1] scale: 4 times
# the mean squared error of the same images on [0, 1]).
RECONSTRUCTION_ERROR = "test/mse"


def _table_metrics(runs: list[CellRun], headline: str | None) -> list[str]:
    """The report's columns: the headline where it is the family's own objective, the image metrics by
    backbone (the headline's first), the generated series' scores, and the reconstruction error of a family
    judged on the images."""
    present = {name for run in runs if run.ok for name in run.final_metrics if name.startswith("test/")}
    parsed_headline = try_parse(headline) if headline else None
    headline_backbone = parsed_headline.backbone if parsed_headline else None
    backbones = sorted(
        {parsed.backbone for parsed in map(try_parse, present) if parsed is not None and parsed.backbone},
        # The headline's backbone first: it is the one the reader compares on.
        key=lambda b: (b != headline_backbone, b),
    )
    ranked = _ranked_feature_metrics()
    columns = []
    # A family judged on its own objective (an AE's or VAE's test/loss) shows it first; one judged on the
    # image metrics that also reconstructs (an AAE, a VAE-GAN) shows its reconstruction error after them,
    # which is all such a grid compares on where the image metrics were skipped.
    own_objective = headline in present and headline_backbone is None
    if own_objective:
        columns.append(headline)
    for backbone in backbones:
        for key in ranked:
            name = MetricName.generative(key, backbone, "test").format()
            if name in present:
                columns.append(name)
    columns += [name for name in (f"test/{score}" for score in SERIES_SCORES) if name in present]
    if not own_objective and RECONSTRUCTION_ERROR in present:
        columns.append(RECONSTRUCTION_ERROR)
    return columns


def _read_tuning(root: Path) -> dict[str, Any] | None:
    """ROOT/tuning.json as a tuning grid wrote it (arms with their candidates and choices), else None."""
    record = read_tuning_record(root)
    if record is None:
        return None
    record["arms"] = [arm for arm in record["arms"] if isinstance(arm, dict)]
    return record


def _values_text(values: Any, only: Iterable[str] | None = None) -> str:
    """`augment_p=0.1, augment_noise=0.5` (only the options in `only`, when given)."""
    if not isinstance(values, dict):
        return "?"
    keep = set(only) if only is not None else set(values)
    return ", ".join(f"{option}={value}" for option, value in values.items() if option in keep)


def _seeds_text(seeds: Any) -> str:
    """`0, 1, 2` from a record's list of seeds; `?` where it holds none or no list."""
    if not isinstance(seeds, list):
        return "?"
    return ", ".join(map(str, seeds)) or "?"


def _chosen_note(arm: dict[str, Any]) -> str:
    """What a tuned arm runs, for its row of the main table; empty for an arm that tuned nothing."""
    tuned = arm.get("tuned") if isinstance(arm.get("tuned"), dict) else {}
    if not tuned:
        return ""
    if not isinstance(arm.get("chosen"), dict):
        return f"not chosen: {arm.get('problem', 'tuning not finished')}"
    return f"chosen on val: {_values_text(arm['chosen'], tuned)}"


def _tuning_lines(root: Path, tuning: dict[str, Any] | None) -> list[str]:
    """The "Tuning (validation split)" section: per arm what was tuned over what, its runs, the choice."""
    if tuning is None:
        if not (root / TUNING_DIR).is_dir():
            return []
        try:
            progress = describe_progress(root / TUNING_DIR)
        except ConfigError as error:
            progress = str(error)
        return ["## Tuning (validation split)", "", f"No choice made yet; tuning: {progress}.", ""]
    arms = tuning["arms"]
    metrics = unique(arm.get("metric") for arm in arms)
    metric = ", ".join(f"`{name}`" for name in metrics) or "validation headline"
    directions = unique(arm.get("direction") for arm in arms)
    better = f" ({directions[0]} is better)" if len(directions) == 1 else ""
    seeds = _seeds_text(tuning.get("seeds"))
    # Each arm's own tune seeds (arms tuned by different grids into one folder may differ).
    arm_tune_seeds = {
        f"{arm.get('augment', '?')} ({train_size_label(as_int(arm.get('train_size')))})": _seeds_text(
            arm.get("tune_seeds", tuning.get("tune_seeds"))
        )
        for arm in arms
        if arm.get("tuned")
    }
    if len(set(arm_tune_seeds.values())) > 1:
        tune_seeds = "; ".join(f"{text} for {arm}" for arm, text in arm_tune_seeds.items())
    else:
        tune_seeds = next(iter(arm_tune_seeds.values()), _seeds_text(tuning.get("tune_seeds")))
    lines = [
        "## Tuning (validation split)",
        "",
        f"Each arm with several candidates trained every candidate with tune seed(s) {tune_seeds} (in "
        f"`{TUNING_DIR}/`; these runs were evaluated on the validation split only, never on the test split), "
        f"then ran the one with the best mean {metric}{better} of its final weights with seed(s) {seeds} "
        "for the tables above.",
        "",
        "| augment | train size | tuned over | candidates | tuning runs | chosen "
        "| validation mean per candidate |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for arm in arms:
        tuned = arm.get("tuned") if isinstance(arm.get("tuned"), dict) else {}
        candidates = [c for c in arm.get("candidates") or [] if isinstance(c, dict)]
        reads = arm.get("reads") or []
        if not reads:
            over, chosen = "reads no tunable option", "-"
        elif not tuned:
            only = candidates[0].get("values") if candidates else {}
            over, chosen = f"nothing (one candidate: {_values_text(only)})", "-"
        else:
            over = "; ".join(f"{option}: {' / '.join(map(str, values))}" for option, values in tuned.items())
            chosen = _chosen_note(arm).removeprefix("chosen on val: ")
        scores = []
        for candidate in candidates if tuned else []:
            label = _values_text(candidate.get("values"), tuned)
            mean = number(candidate.get("mean"))
            score = f"{mean:.4g}" if mean is not None else "n/a"
            best = candidate.get("values") == arm.get("chosen")
            scores.append(f"**{label}: {score}**" if best else f"{label}: {score}")
        row = [
            str(arm.get("augment", "?")),
            train_size_label(as_int(arm.get("train_size"))),
            over,
            str(len(candidates)),
            str(arm.get("tuning_runs", "?")),
            chosen,
            "; ".join(scores) or "-",
        ]
        lines.append("| " + " | ".join(_md_cell(text) for text in row) + " |")
    lines.append("")
    # Arms that read no tunable option have nothing to tune: they do not make a budget unequal.
    counts = {str(arm.get("augment")): len(arm.get("candidates") or []) for arm in arms if arm.get("reads")}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{augment} {count}" for augment, count in sorted(counts.items()))
        lines += [
            f"Unequal tuning: the arms had different numbers of candidates ({listed}); an arm with more "
            "candidates had more chances to look good on validation, which favours it in the tables above.",
            "",
        ]
    elif len(counts) > 1:
        lines += [
            f"Equal tuning: every arm that reads a tunable option had {next(iter(counts.values()))} "
            "candidate(s).",
            "",
        ]
    return lines


def _group_table(
    groups: dict[tuple[int | None, str], list[CellRun]],
    metrics: list[str],
    headline: str | None,
    metrics_of: Callable[[CellRun], dict[str, Any]],
    *,
    chosen_steps: bool = False,
    arm_notes: Mapping[tuple[int | None, str], str] | None = None,
    arm_choices: Mapping[tuple[int | None, str], Mapping[str, Any]] | None = None,
) -> list[str]:
    """A Markdown row per (train size, augment), best headline mean first, of the metrics `metrics_of` gives.

    `chosen_steps` adds the step each seed's chosen checkpoint is from, and notes the finished runs that
    have none instead of the failed and pending ones (which the table of the final weights lists).
    `arm_notes` leads a group's notes (what a tuned arm chose); `arm_choices` are a tuned arm's chosen
    values, which each of its runs must have run. A row whose runs differ in what decides their numbers
    (`row_disagreement`) shows no mean.
    """

    def values(group: list[CellRun], name: str) -> list[float]:
        found = (number(metrics_of(run).get(name)) for run in group if run.ok)
        return [value for value in found if value is not None]

    def group_key(item: tuple[tuple[int | None, str], list[CellRun]]) -> tuple[Any, ...]:
        (train_size, augment), group = item
        headline_values = values(group, headline) if headline else []
        if not headline_values:
            return (train_size_key(train_size), 1, 0.0, augment)
        mean = float(np.mean(headline_values))
        higher = direction(headline) is Direction.HIGHER
        return (train_size_key(train_size), 0, -mean if higher else mean, augment)

    metric_headers = [name.removeprefix("test/") for name in metrics]
    header = [
        "augment",
        "train size",
        "n",
        "failed",
        *metric_headers,
        *(["chosen steps"] if chosen_steps else []),
    ]
    header.append("notes")
    lines = ["| " + " | ".join(header) + " |"]
    # Names left-aligned, numbers right-aligned, notes left-aligned.
    lines.append("|" + "|".join(["---", "---", *["---:"] * (len(header) - 3), "---"]) + "|")
    for (train_size, augment), group in sorted(groups.items(), key=group_key):
        n_ok = sum(run.ok for run in group)
        failures = [run for run in group if run.failed]
        waiting = [run for run in group if run.pending is not None]
        disagreement = row_disagreement(group, (arm_choices or {}).get((train_size, augment)))
        if n_ok and disagreement:
            cells = ["not averaged"] * len(metrics)
        elif n_ok:
            cells = [_format_stats(values(group, name), n_ok) for name in metrics]
        else:
            cells = ["failed" if failures else "n/a"] * len(metrics)
        if chosen_steps:
            ok_runs = sorted((run for run in group if run.ok), key=CellRun.sort_key)
            steps = [str(run.selected["step"]) for run in ok_runs if "step" in run.selected]
            cells.append(", ".join(steps) or "n/a")
            notes = "; ".join(
                f"seed {'?' if run.seed is None else run.seed}: no checkpoint chosen on validation"
                for run in ok_runs
                if not run.selected_metrics
            )
        else:
            notes = "; ".join(
                f"seed {'?' if run.seed is None else run.seed}: {run.error if run.failed else run.pending}"
                for run in failures + waiting
            )
            if failures and not n_ok and not metrics:
                notes = "failed: " + notes
        arm_note = (arm_notes or {}).get((train_size, augment), "")
        notes = "; ".join(note for note in (arm_note, disagreement, notes) if note)
        row = [augment, train_size_label(train_size), str(n_ok), str(len(failures)), *cells, notes]
        lines.append("| " + " | ".join(_md_cell(text) for text in row) + " |")
    return lines


def _rows_apart(runs: list[CellRun]) -> list[str]:
    """The paragraph that says the table's rows differ in more than their arm and training size (cells of
    other grid commands in one folder: other data, another budget), or nothing when they do not."""
    disagreement = table_disagreement(runs)
    if not disagreement:
        return []
    # Iterations that differ under one command's options (an offline pool under --max-epochs): a folder of
    # its own would differ the same way; a budget in iterations would not.
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


def _arm_choices(tuning: dict[str, Any] | None) -> dict[tuple[int | None, str], dict[str, Any]]:
    """(train size, augment) -> the values a tuned arm chose for the options it tuned."""
    return {
        (as_int(arm.get("train_size")), str(arm.get("augment"))): {
            name: value for name, value in arm["chosen"].items() if name in arm["tuned"]
        }
        for arm in (tuning["arms"] if tuning else [])
        if isinstance(arm.get("chosen"), dict) and isinstance(arm.get("tuned"), dict)
    }


def _rows(runs: list[CellRun]) -> dict[tuple[int | None, str], list[CellRun]]:
    """The tables' rows: (train size, augment) -> its cells."""
    groups: dict[tuple[int | None, str], list[CellRun]] = {}
    for run in runs:
        groups.setdefault((run.train_size, run.augment or "?"), []).append(run)
    return groups


def rows_not_averaged(root: Path, runs: list[CellRun]) -> dict[tuple[int | None, str], str]:
    """(train size, augment) -> why the row's runs are not one experiment (`row_disagreement`), for each
    row the tables show no mean for; ablation.png draws those rows' seeds apart, by the same rule."""
    choices = _arm_choices(_read_tuning(root))
    return {
        key: disagreement
        for key, group in _rows(runs).items()
        if any(run.ok for run in group) and (disagreement := row_disagreement(group, choices.get(key)))
    }


def write_md(path: Path, root: Path, runs: list[CellRun], headline: str | None, figure: str) -> None:
    """The grid's Markdown report at `path`, ending with the figure file `figure` (a name beside it)."""
    ok_runs = [run for run in runs if run.ok]
    tuning = _read_tuning(root)
    arm_notes = {
        (as_int(arm.get("train_size")), str(arm.get("augment"))): _chosen_note(arm)
        for arm in (tuning["arms"] if tuning else [])
    }
    arm_choices = _arm_choices(tuning)
    metrics = _table_metrics(runs, headline)
    groups = _rows(runs)

    better = direction(headline) if headline is not None else Direction.NONE
    label = "" if better is Direction.NONE else f" ({better.value})"
    evaluations = [run.test_evaluation for run in ok_runs]
    sizes = unique(
        f"n_real={e['n_real']}, n_fake={e['n_fake']}" for e in evaluations if "n_real" in e and "n_fake" in e
    )
    steps = unique(run.summary.get("global_step") for run in ok_runs)
    devices = unique(run.summary.get("device") for run in ok_runs)
    backbones = "; ".join(unique(e.get("backbone") for e in evaluations))
    # Runs whose evaluations name no backbone (series, scored without one) leave the clause out.
    backbone = f"backbone: {backbones or 'unknown'}; " if backbones or not evaluations else ""
    lines = [
        f"# Ablation: {root.name}",
        "",
        f"Headline metric: `{headline or 'none'}`{label}; {backbone}"
        f"test evaluation: {'; '.join(sizes) or 'unknown'}; "
        f"steps per run: {', '.join(steps) or 'unknown'}; "
        f"device: {'; '.join(devices) or 'unknown'}.",
        "",
        f"{len(ok_runs)} of {len(runs)} runs finished{not_finished(runs)}. Every number below is from the "
        "test split, on which no checkpoint choice was made "
        + (
            "(the best checkpoint is picked on the validation split)"
            if any(run.selected_metrics for run in ok_runs)
            else "(no run finished)"
            if not ok_runs
            else "(no run chose a checkpoint on validation, "
            + (
                "as none measured an image metric to choose it by"
                if headline is None
                else "as none validated during training, its steps being fewer than --eval-every"
            )
            + ": the final weights are the only ones reported)"
        )
        + (
            "; tuned arms' options were chosen on the validation split too (see Tuning below)"
            if tuning
            else ""
        )
        + ". Cells are mean ± sample std (ddof=1) over the group's finished seeds; failed runs are left out.",
        *_rows_apart(runs),
        "",
        "### Final weights",
        "",
        *_group_table(
            groups,
            metrics,
            headline,
            lambda run: run.final_metrics,
            arm_notes=arm_notes,
            arm_choices=arm_choices,
        ),
    ]
    if any(run.selected_metrics for run in ok_runs):
        chosen_on = unique(run.selected.get("chosen_on") for run in ok_runs)
        lines += [
            "",
            "### Checkpoint chosen on validation",
            "",
            f"Each run's `best.ckpt`, the checkpoint with the best "
            f"`{'`, `'.join(chosen_on) or 'validation metric'}` among the validations during training "
            "(chosen on validation numbers only), evaluated on the test split with the same seeds and sample "
            "counts; `chosen steps` lists its step per seed.",
            "",
            *_group_table(
                groups,
                metrics,
                headline,
                lambda run: run.selected_metrics,
                chosen_steps=True,
                arm_notes=arm_notes,
                arm_choices=arm_choices,
            ),
        ]
    lines += ["", *_tuning_lines(root, tuning), f"![validation curves]({figure})", ""]
    write_file_atomically(path, "\n".join(lines))

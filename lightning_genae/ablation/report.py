"""Reporting a finished ablation grid: `ablation.csv`, `ablation.md` and `ablation.png` from its run folders.

`summarize` rebuilds the three files from whatever run folders exist under the root, so it can be re-run at
any time (after a partial grid, after re-running cells). Cells the grid planned (`grid.json`) that have not
finished are listed as missing, unfinished or running, never counted as failed. Metric names, their
backbones and which side of each is better come from the vocabulary in `lightning_genae.metrics.names`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_genae.ablation.grid import (
    FAILED_FILE,
    parse_cell_name,
    read_grid_cells,
    train_size_label,
    write_file_atomically,
)
from lightning_genae.errors import ConfigError, describe_error
from lightning_genae.metrics.names import (
    BACKBONES,
    GENERATIVE_KEYS,
    KINDS,
    Direction,
    MetricName,
    direction,
    on_split,
    try_parse,
)
from lightning_genae.run_folder import live_lock_owner, started_run_files

__all__ = ["describe_progress", "summarize"]

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
CSV_NAME = "ablation.csv"
MD_NAME = "ablation.md"
PNG_NAME = "ablation.png"

# Test generative metrics shown in the Markdown table, in this column order, per backbone: those that
# rank models (kid_std, the spread of kid, has no better side and stays in the CSV).
TABLE_METRICS = tuple(key for key in GENERATIVE_KEYS if KINDS[key].direction is not Direction.NONE)


@dataclass
class _Run:
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
        return metrics if isinstance(metrics, dict) else {}

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
        name = self.summary.get("headline_metric")
        parsed = try_parse(name) if isinstance(name, str) else None
        if parsed is not None:
            return parsed.on("test").format()
        # No headline recorded (or one this version cannot rank): fall back to the Fréchet distance of
        # whichever backbone was evaluated.
        for backbone in BACKBONES:
            candidate = MetricName.generative("fd", backbone, "test").format()
            if candidate in self.final_metrics:
                return candidate
        return None

    def sort_key(self) -> tuple[Any, ...]:
        return (_train_size_key(self.train_size), self.augment or "", _seed_key(self.seed), self.cell)


def _train_size_key(train_size: int | None) -> tuple[int, int]:
    # "full" (None) is the largest train size, so it sorts last.
    return (1, 0) if train_size is None else (0, train_size)


def _seed_key(seed: int | None) -> tuple[int, int]:
    return (1, 0) if seed is None else (0, seed)


def _as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return None, f"corrupt {path.name}: {describe_error(error)}"
    if not isinstance(data, dict):
        return None, f"corrupt {path.name}: expected a JSON object, got {type(data).__name__}"
    return data, None


def _load_run(run_dir: Path) -> _Run:
    name_augment, name_size, name_seed = parse_cell_name(run_dir.name)
    failed_file = run_dir / FAILED_FILE
    # run_grid deletes failed.json when a cell succeeds, so a failed.json is always the latest attempt,
    # even beside a summary.json left by an earlier success.
    if failed_file.is_file():
        record, problem = _read_json(failed_file)
        record = record or {}
        return _Run(
            cell=run_dir.name,
            run_dir=run_dir,
            augment=str(record["augment"]) if record.get("augment") is not None else name_augment,
            train_size=_as_int(record["train_size"]) if "train_size" in record else name_size,
            seed=_as_int(record.get("seed")) if record.get("seed") is not None else name_seed,
            ok=False,
            error=problem or str(record.get("error") or "unknown error (failed.json has no 'error')"),
        )
    summary, problem = _read_json(run_dir / SUMMARY_FILE)
    if summary is None:
        return _Run(run_dir.name, run_dir, name_augment, name_size, name_seed, ok=False, error=problem)
    if "final_metrics" in summary and not isinstance(summary["final_metrics"], dict):
        return _Run(
            run_dir.name,
            run_dir,
            name_augment,
            name_size,
            name_seed,
            ok=False,
            error=f"corrupt {SUMMARY_FILE}: final_metrics is not a JSON object",
        )
    config = summary.get("config") if isinstance(summary.get("config"), dict) else {}
    augment = config.get("augment", summary.get("augment", name_augment))
    train_size = _as_int(config["train_size"]) if "train_size" in config else name_size
    seed = _as_int(config.get("seed", summary.get("seed", name_seed)))
    return _Run(
        cell=run_dir.name,
        run_dir=run_dir,
        augment=str(augment) if augment is not None else None,
        train_size=train_size,
        seed=seed,
        ok=True,
        summary=summary,
    )


def _pending_run(run_dir: Path) -> _Run:
    """A planned cell with neither summary.json nor failed.json: missing, unfinished or running."""
    augment, train_size, seed = parse_cell_name(run_dir.name)
    owner = live_lock_owner(run_dir)
    pending = "running" if owner else "unfinished" if started_run_files(run_dir) else "missing"
    return _Run(run_dir.name, run_dir, augment, train_size, seed, ok=False, pending=pending)


def _load_runs(root: Path) -> list[_Run]:
    if not root.is_dir():
        raise ConfigError(
            f"ablation folder {root} does not exist; run a grid first, or pass the grid's --output folder"
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
    runs = [_load_run(path) for path in run_dirs.values()]
    runs += [_pending_run(root / name) for name in sorted(planned - set(run_dirs))]
    return sorted(runs, key=_Run.sort_key)


def describe_progress(root: Path) -> str:
    """One line: how many of the grid's cells finished, and which are failed, running, unfinished, missing."""
    runs = _load_runs(Path(root))
    finished = sum(run.ok for run in runs)
    parts = [f"{finished} of {len(runs)} cells finished"]
    for status in ("failed", "running", "unfinished", "missing"):
        names = [run.cell for run in runs if run.status == status]
        if names:
            parts.append(f"{status}: {', '.join(names)}")
    if any(run.status in ("unfinished", "missing", "failed") for run in runs):
        parts.append("re-run the grid command to run, resume or retry them")
    return "; ".join(parts)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _main_headline(runs: Iterable[_Run]) -> str | None:
    counts = Counter(run.headline for run in runs if run.ok and run.headline is not None)
    if not counts:
        return None
    # Most runs' headline wins; ties go to the alphabetically first so the report is deterministic.
    return min(counts, key=lambda name: (-counts[name], name))


def _unique(values: Iterable[Any]) -> list[str]:
    return sorted({str(value) for value in values if value is not None and value != ""})


def _not_finished(runs: list[_Run]) -> str:
    """` (missing: a; unfinished: b)` for the planned cells that have neither finished nor failed."""
    parts = []
    for status in ("running", "unfinished", "missing"):
        names = [run.cell for run in runs if run.status == status]
        if names:
            parts.append(f"{status}: {', '.join(names)}")
    return f" ({'; '.join(parts)})" if parts else ""


# Prefix of the ablation.csv columns that describe the checkpoint chosen on validation.
SELECTED_PREFIX = "selected/"


def _selected_columns(run: _Run) -> dict[str, Any]:
    """`selected/step`, `selected/<validation metric>`, `selected/test/...` of a run's chosen checkpoint."""
    record = run.selected
    chosen_on = record.get("chosen_on")
    columns = {"step": record.get("step")}
    if isinstance(chosen_on, str):
        columns[chosen_on] = record.get(chosen_on)
    columns.update({name: value for name, value in run.selected_metrics.items() if name.startswith("test/")})
    return {SELECTED_PREFIX + name: value for name, value in columns.items() if value is not None}


def _write_csv(path: Path, runs: list[_Run]) -> None:
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
    mean = float(np.mean(values))
    spread = f"{float(np.std(values, ddof=1)):.4g}" if len(values) > 1 else "n/a"
    text = f"{mean:.4g} ± {spread}"
    # Fewer values than ok runs means some runs lack this metric; say how many the mean is over.
    return text if len(values) == n_ok else f"{text} (n={len(values)})"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table_metrics(runs: list[_Run], headline: str | None) -> list[str]:
    present = {name for run in runs if run.ok for name in run.final_metrics if name.startswith("test/")}
    parsed_headline = try_parse(headline) if headline else None
    headline_backbone = parsed_headline.backbone if parsed_headline else None
    backbones = sorted(
        {parsed.backbone for parsed in map(try_parse, present) if parsed is not None and parsed.backbone},
        # The headline's backbone first: it is the one the reader compares on.
        key=lambda b: (b != headline_backbone, b),
    )
    columns = []
    for backbone in backbones:
        for key in TABLE_METRICS:
            name = MetricName.generative(key, backbone, "test").format()
            if name in present:
                columns.append(name)
    return columns


def _group_table(
    groups: dict[tuple[int | None, str], list[_Run]],
    metrics: list[str],
    headline: str | None,
    metrics_of: Callable[[_Run], dict[str, Any]],
    *,
    chosen_steps: bool = False,
) -> list[str]:
    """A Markdown row per (train size, augment), best headline mean first, of the metrics `metrics_of` gives.

    `chosen_steps` adds the step each seed's chosen checkpoint is from, and notes the finished runs that
    have none instead of the failed and pending ones (which the table of the final weights lists).
    """

    def values(group: list[_Run], name: str) -> list[float]:
        found = (_number(metrics_of(run).get(name)) for run in group if run.ok)
        return [value for value in found if value is not None]

    def group_key(item: tuple[tuple[int | None, str], list[_Run]]) -> tuple[Any, ...]:
        (train_size, augment), group = item
        headline_values = values(group, headline) if headline else []
        if not headline_values:
            return (_train_size_key(train_size), 1, 0.0, augment)
        mean = float(np.mean(headline_values))
        higher = direction(headline) is Direction.HIGHER
        return (_train_size_key(train_size), 0, -mean if higher else mean, augment)

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
        if n_ok:
            cells = [_format_stats(values(group, name), n_ok) for name in metrics]
        else:
            cells = ["failed" if failures else "n/a"] * len(metrics)
        if chosen_steps:
            ok_runs = sorted((run for run in group if run.ok), key=_Run.sort_key)
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
        row = [augment, train_size_label(train_size), str(n_ok), str(len(failures)), *cells, notes]
        lines.append("| " + " | ".join(_md_cell(text) for text in row) + " |")
    return lines


def _write_md(path: Path, root: Path, runs: list[_Run], headline: str | None) -> None:
    ok_runs = [run for run in runs if run.ok]
    metrics = _table_metrics(runs, headline)
    groups: dict[tuple[int | None, str], list[_Run]] = {}
    for run in runs:
        groups.setdefault((run.train_size, run.augment or "?"), []).append(run)

    better = direction(headline) if headline is not None else Direction.NONE
    label = "" if better is Direction.NONE else f" ({better.value})"
    evaluations = [run.test_evaluation for run in ok_runs]
    sizes = _unique(
        f"n_real={e['n_real']}, n_fake={e['n_fake']}" for e in evaluations if "n_real" in e and "n_fake" in e
    )
    steps = _unique(run.summary.get("global_step") for run in ok_runs)
    devices = _unique(run.summary.get("device") for run in ok_runs)
    lines = [
        f"# Ablation: {root.name}",
        "",
        f"Headline metric: `{headline or 'none'}`{label}; "
        f"backbone: {'; '.join(_unique(e.get('backbone') for e in evaluations)) or 'unknown'}; "
        f"test evaluation: {'; '.join(sizes) or 'unknown'}; "
        f"steps per run: {', '.join(steps) or 'unknown'}; "
        f"device: {'; '.join(devices) or 'unknown'}.",
        "",
        f"{len(ok_runs)} of {len(runs)} runs finished{_not_finished(runs)}. Every number below is from the "
        "test split, on which no checkpoint choice was made (the best checkpoint is picked on the validation "
        "split). Cells are mean ± sample std (ddof=1) over the group's finished seeds; failed runs are left "
        "out.",
        "",
        "### Final weights",
        "",
        *_group_table(groups, metrics, headline, lambda run: run.final_metrics),
    ]
    if any(run.selected_metrics for run in ok_runs):
        chosen_on = _unique(run.selected.get("chosen_on") for run in ok_runs)
        lines += [
            "",
            "### Checkpoint chosen on validation",
            "",
            f"Each run's `best.ckpt`, the checkpoint with the best "
            f"`{'`, `'.join(chosen_on) or 'validation metric'}` among the validations during training "
            "(chosen on validation numbers only), evaluated on the test split with the same seeds and sample "
            "counts; `chosen steps` lists its step per seed.",
            "",
            *_group_table(groups, metrics, headline, lambda run: run.selected_metrics, chosen_steps=True),
        ]
    lines += ["", f"![validation curves]({PNG_NAME})", ""]
    write_file_atomically(path, "\n".join(lines))


def _validation_curve(run: _Run, metric: str) -> dict[int, float]:
    """step -> value of `metric` from the run's metrics.csv; empty when the file or column is missing."""
    curve: dict[int, float] = {}
    try:
        with open(run.run_dir / METRICS_FILE, newline="", encoding="utf-8") as file:
            for row in csv.DictReader(file):
                step, value = _as_int(row.get("step")), row.get(metric)
                if step is None or not value:
                    continue
                try:
                    number = float(value)
                except ValueError:
                    continue
                if math.isfinite(number):
                    curve[step] = number  # a step logged twice (resume) keeps its last value
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return curve


def _write_png(path: Path, root: Path, runs: list[_Run], headline: str | None) -> None:
    """Mean validation headline per group against step, with a min..max band across seeds.

    Runs evaluated at different steps are aligned on the steps present in every run of the group (no
    interpolation, so every plotted point is a measured one); a group with no common step draws each run.
    """
    # The object-oriented API with an explicit Agg canvas: headless, and it leaves pyplot's global
    # backend alone for a caller (a notebook) that has its own.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric = on_split(headline, "val") if headline else None
    several_sizes = len({run.train_size for run in runs}) > 1
    curves: dict[tuple[Any, ...], list[dict[int, float]]] = {}
    if metric is not None:
        for run in sorted((run for run in runs if run.ok), key=_Run.sort_key):
            curve = _validation_curve(run, metric)
            if curve:
                key = (_train_size_key(run.train_size), run.train_size, run.augment or "?")
                curves.setdefault(key, []).append(curve)

    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(
        f"{root.name}: validation {metric or 'headline metric'} (mean, band = min..max over seeds)"
    )
    axes.set_xlabel("training iterations")
    axes.set_ylabel(metric or "metric")
    if not curves:
        where = f"of {metric} in any run's {METRICS_FILE}" if metric else "(no headline metric)"
        axes.text(
            0.5, 0.5, f"no validation values {where}", ha="center", va="center", transform=axes.transAxes
        )
    # One colour per augment and one line style per train size, so either comparison can be read off.
    augments = sorted({augment for _, _, augment in curves})
    sizes = sorted({(size_key, size) for size_key, size, _ in curves})
    styles = ("-", "--", ":", "-.")
    for (size_key, train_size, augment), group in sorted(curves.items()):
        label = f"{augment}, train size {train_size_label(train_size)}" if several_sizes else augment
        style = {
            "color": f"C{augments.index(augment) % 10}",
            "linestyle": styles[sizes.index((size_key, train_size)) % len(styles)],
        }
        common = sorted(set.intersection(*(set(curve) for curve in group)))
        if common:
            values = np.array([[curve[step] for step in common] for curve in group])
            axes.plot(
                common,
                values.mean(axis=0),
                marker="o",
                markersize=3,
                label=f"{label} (n={len(group)})",
                **style,
            )
            if len(group) > 1:
                axes.fill_between(
                    common, values.min(axis=0), values.max(axis=0), color=style["color"], alpha=0.2
                )
        else:
            # No step that every seed evaluated: a mean would mix different steps, so draw the seeds apart.
            for i, curve in enumerate(group):
                steps = sorted(curve)
                axes.plot(
                    steps,
                    [curve[step] for step in steps],
                    alpha=0.6,
                    label=f"{label} (n={len(group)}, each seed: no common steps)" if i == 0 else None,
                    **style,
                )
    if curves:
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
    failed = [run.cell for run in runs if run.failed]
    note = f"failed runs, not plotted: {', '.join(failed)}" if failed else ""
    if note:
        figure.text(0.01, 0.01, note if len(note) < 150 else note[:147] + "...", fontsize="x-small")
    figure.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    buffer = io.BytesIO()
    # The failed runs also go into the PNG's text metadata, where tools (and tests) can read them.
    figure.savefig(buffer, format="png", metadata={"Title": f"{root.name} ablation", "Description": note})
    write_file_atomically(path, buffer.getvalue())


def summarize(root: Path) -> dict[str, Path]:
    """Rebuild ablation.csv, .md and .png from the run folders under `root`; returns their paths."""
    root = Path(root)
    runs = _load_runs(root)
    headline = _main_headline(runs)
    paths = {"csv": root / CSV_NAME, "md": root / MD_NAME, "png": root / PNG_NAME}
    _write_csv(paths["csv"], runs)
    _write_md(paths["md"], root, runs, headline)
    _write_png(paths["png"], root, runs, headline)
    return paths

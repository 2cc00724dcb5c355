"""ablation.png: the validation headline per group against step, and the overfitting-signal panels."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lightning_genae.cache import write_file_atomically
from lightning_genae.experiment.ablation.grid import train_size_label
from lightning_genae.experiment.ablation.runs import CellRun, as_int, train_size_key
from lightning_genae.metrics.names import MetricName, on_split
from lightning_genae.run_files import METRICS_FILE


def _validation_curve(run: CellRun, metric: str) -> dict[int, float]:
    """step -> value of `metric` from the run's metrics.csv; empty when the file or column is missing."""
    curve: dict[int, float] = {}
    try:
        with open(run.run_dir / METRICS_FILE, newline="", encoding="utf-8") as file:
            for row in csv.DictReader(file):
                step, value = as_int(row.get("step")), row.get(metric)
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


# ADA's overfitting heuristic r_t = E[sign D(x)] on augmented training batches, logged every training step by
# runs that adapt their augmentation strength (--augment ada, --augment-p auto).
ADA_RT = "train/ada_rt"


@dataclass(frozen=True)
class _SignalPanel:
    """A panel of ablation.png beside the headline: signals (metric, what it is measured on) against step."""

    title: str
    ylabel: str
    lines: tuple[tuple[str, str], ...]


def _overfitting_signal(score: str, split: str) -> str:
    # The names callbacks/overfitting.py logs, spelled by the vocabulary (the report does not import
    # callbacks, which would import Lightning into --summarize).
    return MetricName(f"d_{score}_{split}", split="val").format()


# The overfitting signal (callbacks/overfitting.py): D's score of a fixed batch of training reals against one
# of validation reals, both clean and in eval mode; a panel is drawn when any run logged one of its metrics.
SIGNAL_PANELS = (
    _SignalPanel(
        "D's mean logit on real images (clean, eval mode)",
        "mean logit",
        ((_overfitting_signal("logit", "train"), "training reals"),
         (_overfitting_signal("logit", "val"), "validation reals")),
    ),
    _SignalPanel(
        "D's mean energy on real images (clean, eval mode)",
        "mean energy (lower: judged real)",
        ((_overfitting_signal("energy", "train"), "training reals"),
         (_overfitting_signal("energy", "val"), "validation reals")),
    ),
    _SignalPanel(
        "mean sign of D's logit on real images",
        "mean sign",
        ((_overfitting_signal("sign", "train"), "training reals"),
         (_overfitting_signal("sign", "val"), "validation reals"),
         (ADA_RT, "r_t (augmented training batches)")),
    ),
)  # fmt: skip


@dataclass(frozen=True)
class _MeanCurve:
    """A group's curve: the mean over its seeds at the steps every seed logged, with the min..max band."""

    steps: list[int]
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int


def _group_curves(
    runs: list[CellRun], metric: str, leave_out: Collection[tuple[int | None, str]] = ()
) -> dict[tuple[Any, ...], list[dict[int, float]]]:
    """(train-size sort key, train size, augment) -> each finished run's curve of `metric` (non-empty),
    but for the rows (train size, augment) in `leave_out`."""
    curves: dict[tuple[Any, ...], list[dict[int, float]]] = {}
    for run in sorted((run for run in runs if run.ok), key=CellRun.sort_key):
        if (run.train_size, run.augment or "?") in leave_out:
            continue
        curve = _validation_curve(run, metric)
        if curve:
            curves.setdefault(
                (train_size_key(run.train_size), run.train_size, run.augment or "?"), []
            ).append(curve)
    return curves


def _mean_curve(group: list[dict[int, float]]) -> _MeanCurve | None:
    """Aligned on the steps present in every seed's curve (no interpolation); None without a common step."""
    common = sorted(set.intersection(*(set(curve) for curve in group)))
    if not common:
        return None
    values = np.array([[curve[step] for step in common] for curve in group])
    return _MeanCurve(common, values.mean(axis=0), values.min(axis=0), values.max(axis=0), len(group))


def signal_curves(
    runs: list[CellRun], leave_out: Collection[tuple[int | None, str]] = ()
) -> list[tuple[_SignalPanel, dict[str, dict[tuple[Any, ...], _MeanCurve]]]]:
    """The signal panels some run logged: per panel, per metric, each group's mean curve over its seeds
    (but the rows in `leave_out`, which are not averaged)."""
    panels = []
    for panel in SIGNAL_PANELS:
        lines = {}
        for metric, _ in panel.lines:
            means = {key: _mean_curve(group) for key, group in _group_curves(runs, metric, leave_out).items()}
            lines[metric] = {key: mean for key, mean in means.items() if mean is not None}
        if any(lines.values()):
            panels.append((panel, lines))
    return panels


def write_png(
    path: Path,
    root: Path,
    runs: list[CellRun],
    headline: str | None,
    not_averaged: Collection[tuple[int | None, str]] = (),
) -> None:
    """Mean validation headline per group against step, with a min..max band across seeds, and beside it
    a panel per overfitting signal the runs logged (training against validation reals, and r_t).

    Runs evaluated at different steps are aligned on the steps present in every run of the group (no
    interpolation, so every plotted point is a measured one); a group with no common step draws each run.
    The rows (train size, augment) in `not_averaged`, whose runs are not one experiment (the tables show
    no mean for them), draw each run apart and stay out of the signal panels' means.
    """
    # The object-oriented API with an explicit Agg canvas: headless, and it leaves pyplot's global
    # backend alone for a caller (a notebook) that has its own.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric = on_split(headline, "val") if headline else None
    several_sizes = len({run.train_size for run in runs}) > 1
    curves = _group_curves(runs, metric) if metric is not None else {}
    signals = signal_curves(runs, leave_out=not_averaged)

    figure = Figure(figsize=(8 + 6 * len(signals), 5), dpi=100)
    FigureCanvasAgg(figure)
    axes, *signal_axes = figure.subplots(1, 1 + len(signals), squeeze=False)[0]
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
    augments = sorted({augment for _, _, augment in curves} | {
        augment for _, lines in signals for means in lines.values() for _, _, augment in means
    })  # fmt: skip
    sizes = sorted({(size_key, size) for size_key, size, _ in curves})
    styles = ("-", "--", ":", "-.")

    def group_label(train_size: int | None, augment: str) -> str:
        return f"{augment}, train size {train_size_label(train_size)}" if several_sizes else augment

    for (size_key, train_size, augment), group in sorted(curves.items()):
        label = group_label(train_size, augment)
        style = {
            "color": f"C{augments.index(augment) % 10}",
            "linestyle": styles[sizes.index((size_key, train_size)) % len(styles)],
        }
        apart = (train_size, augment) in not_averaged
        mean = None if apart else _mean_curve(group)
        if mean is not None:
            axes.plot(mean.steps, mean.mean, marker="o", markersize=3, label=f"{label} (n={mean.n})", **style)
            if mean.n > 1:
                axes.fill_between(mean.steps, mean.low, mean.high, color=style["color"], alpha=0.2)
        else:
            # Runs that are not one experiment, or no step that every seed evaluated (a mean would mix
            # different steps): the seeds drawn apart.
            why = "not averaged: the runs differ, see the report" if apart else "no common steps"
            for i, curve in enumerate(group):
                steps = sorted(curve)
                axes.plot(
                    steps,
                    [curve[step] for step in steps],
                    alpha=0.6,
                    label=f"{label} (n={len(group)}, each seed: {why})" if i == 0 else None,
                    **style,
                )
    if curves:
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)

    # In a signal panel the line style tells the signals apart (training reals solid, validation reals
    # dashed, r_t dotted) and the colour the augmentation, as on the left; a marker per train size.
    markers = ("o", "s", "^", "D")
    signal_sizes = sorted(
        {(key[0], key[1]) for _, lines in signals for means in lines.values() for key in means}
    )
    for signal_axis, (panel, lines) in zip(signal_axes, signals, strict=True):
        signal_axis.set_title(f"{panel.title}, mean over seeds", fontsize="medium")
        signal_axis.set_xlabel("training iterations")
        signal_axis.set_ylabel(panel.ylabel)
        for (signal, what), style in zip(panel.lines, ("-", "--", ":"), strict=False):
            for (size_key, train_size, augment), mean in sorted(lines[signal].items()):
                signal_axis.plot(
                    mean.steps,
                    mean.mean,
                    color=f"C{augments.index(augment) % 10}",
                    linestyle=style,
                    marker=markers[signal_sizes.index((size_key, train_size)) % len(markers)],
                    markersize=3 if signal != ADA_RT else 0,
                    label=f"{group_label(train_size, augment)}: {what} (n={mean.n})",
                )
        signal_axis.legend(fontsize="x-small")
        signal_axis.grid(alpha=0.3)

    failed = [run.cell for run in runs if run.failed]
    notes = [f"failed runs, not plotted: {', '.join(failed)}"] if failed else []
    if not_averaged and signals:
        rows = ", ".join(sorted(group_label(size, augment) for size, augment in not_averaged))
        notes.append(f"left out of the signal panels, their runs not one experiment: {rows}")
    note = "; ".join(notes)
    if note:
        figure.text(0.01, 0.01, note if len(note) < 150 else note[:147] + "...", fontsize="x-small")
    figure.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    buffer = io.BytesIO()
    # The failed runs also go into the PNG's text metadata, where tools (and tests) can read them.
    figure.savefig(buffer, format="png", metadata={"Title": f"{root.name} ablation", "Description": note})
    write_file_atomically(path, buffer.getvalue())

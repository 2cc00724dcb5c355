"""ablation.png: the validation headline per row against step, and the overfitting-signal panels."""

from __future__ import annotations

import io
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from lightning_genae.cache import write_file_atomically
from lightning_genae.experiment.ablation.cells import train_size_label
from lightning_genae.experiment.ablation.runs import CellRun, train_size_key
from lightning_genae.metrics.names import MetricName, on_split
from lightning_genae.run_files import METRICS_FILE

if TYPE_CHECKING:
    import pandas as pd

# ADA's overfitting heuristic r_t = E[sign D(x)] on augmented training batches, logged by runs that adapt
# their augmentation strength (--augment ada, --augment-p auto).
ADA_RT = "train/ada_rt"


def _reals(score: str) -> tuple[tuple[str, str], ...]:
    """D's score of a fixed batch of training reals and one of validation reals, both clean and in eval mode,
    under the names callbacks/overfitting.py logs (importing it would import Lightning into --summarize)."""
    splits = {"train": "training reals", "val": "validation reals"}
    return tuple(
        (MetricName(f"d_{score}_{split}", split="val").format(), what) for split, what in splits.items()
    )


class SignalPanel(NamedTuple):
    """A panel of ablation.png beside the headline: signals (metric, measured on) by step, if logged."""

    title: str
    ylabel: str
    lines: tuple[tuple[str, str], ...]


SIGNAL_PANELS = (
    SignalPanel("D's mean logit on real images (clean, eval mode)", "mean logit", _reals("logit")),
    SignalPanel(
        "D's mean energy on real images (clean, eval mode)",
        "mean energy (lower: judged real)",
        _reals("energy"),
    ),
    SignalPanel(
        "mean sign of D's logit on real images",
        "mean sign",
        (*_reals("sign"), (ADA_RT, "r_t (augmented training batches)")),
    ),
)


class MeanCurve(NamedTuple):
    """A row's mean curve over its `n` seeds at the steps every seed logged, with the min..max band."""

    steps: list[int]
    mean: Any
    low: Any
    high: Any
    n: int


def _metrics(run: CellRun) -> pd.DataFrame:
    """The run's metrics.csv as numbers, a row per step (a step logged twice, on resume: its last value)."""
    import pandas as pd

    try:
        frame = pd.read_csv(run.run_dir / METRICS_FILE).apply(pd.to_numeric, errors="coerce")
        return frame.dropna(subset=["step"]).astype({"step": int}).groupby("step").last()
    except (OSError, UnicodeDecodeError, ValueError, KeyError):  # unreadable, or no step column
        return pd.DataFrame()


def _row_curves(
    runs: list[CellRun], metrics: Collection[str], leave_out: Collection[str] = ()
) -> dict[str, dict[tuple[Any, ...], list[pd.Series]]]:
    """metric -> (train-size order, train size, augment) -> each finished run's non-empty curve of it."""
    curves: dict[str, dict[tuple[Any, ...], list[pd.Series]]] = {metric: {} for metric in metrics}
    for run in sorted((run for run in runs if run.ok and run.row not in leave_out), key=CellRun.sort_key):
        frame = _metrics(run)
        for metric in (metric for metric in metrics if metric in frame):
            curve = frame[metric][frame[metric].abs() < float("inf")]  # neither NaN nor inf
            if not curve.empty:
                key = (train_size_key(run.train_size), run.train_size, run.augment or "?")
                curves[metric].setdefault(key, []).append(curve)
    return curves


def _mean_curve(group: list[pd.Series]) -> MeanCurve | None:
    """The seeds' curves aligned on the steps every one logged; None without a common step."""
    import pandas as pd

    table = pd.concat(group, axis=1, join="inner")
    if table.empty:
        return None
    return MeanCurve(
        table.index.tolist(), *(table.agg(f, axis=1).to_numpy() for f in ("mean", "min", "max")), len(group)
    )


def signal_curves(
    runs: list[CellRun], leave_out: Collection[str] = ()
) -> list[tuple[SignalPanel, dict[str, dict[tuple[Any, ...], MeanCurve]]]]:
    """The signal panels some run logged: per panel, per metric, each row's mean curve over its seeds."""
    curves = _row_curves(runs, [metric for panel in SIGNAL_PANELS for metric, _ in panel.lines], leave_out)
    panels = []
    for panel in SIGNAL_PANELS:
        lines = {
            metric: {key: mean for key, group in curves[metric].items() if (mean := _mean_curve(group))}
            for metric, _ in panel.lines
        }
        if any(lines.values()):
            panels.append((panel, lines))
    return panels


def write_png(
    path: Path, root: Path, runs: list[CellRun], headline: str | None, not_averaged: Collection[str] = ()
) -> None:
    """Mean validation headline per row against step, and a panel per overfitting signal the runs logged; a
    row with no common step, or in `not_averaged`, draws each run apart."""
    # An explicit Agg canvas leaves pyplot's global backend alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric = on_split(headline, "val") if headline else None
    several_sizes = len({run.train_size for run in runs}) > 1
    curves = _row_curves(runs, [metric])[metric] if metric is not None else {}
    signals = signal_curves(runs, leave_out=not_averaged)
    figure = Figure(figsize=(8 + 6 * len(signals), 5), dpi=100)
    FigureCanvasAgg(figure)
    axes, *signal_axes = figure.subplots(1, 1 + len(signals), squeeze=False)[0]
    axes.set_title(
        f"{root.name}: validation {metric or 'headline metric'} (mean, band = min..max over seeds)"
    )
    axes.set(xlabel="training iterations", ylabel=metric or "metric")
    if not curves:
        where = f"of {metric} in any run's {METRICS_FILE}" if metric else "(no headline metric)"
        axes.text(
            0.5, 0.5, f"no validation values {where}", ha="center", va="center", transform=axes.transAxes
        )
    # One colour per augment, one line style (in the signal panels, a marker) per train size.
    keys = {*curves, *(key for _, lines in signals for means in lines.values() for key in means)}
    augments, sizes = sorted({key[2] for key in keys}), sorted({key[:2] for key in keys})

    def label(key: tuple[Any, ...]) -> str:
        return f"{key[2]}, train size {train_size_label(key[1])}" if several_sizes else key[2]

    for key, group in sorted(curves.items()):
        style = {
            "color": f"C{augments.index(key[2]) % 10}",
            "linestyle": "- -- : -.".split()[sizes.index(key[:2]) % 4],
        }
        apart = f"{key[2]}-ts{train_size_label(key[1])}" in not_averaged
        mean = None if apart else _mean_curve(group)
        if mean is not None:
            axes.plot(
                mean.steps, mean.mean, marker="o", markersize=3, label=f"{label(key)} (n={mean.n})", **style
            )
            if mean.n > 1:
                axes.fill_between(mean.steps, mean.low, mean.high, color=style["color"], alpha=0.2)
            continue
        why = "not averaged: the runs differ, see the report" if apart else "no common steps"
        for i, curve in enumerate(group):
            tag = f"{label(key)} (n={len(group)}, each seed: {why})" if i == 0 else None
            axes.plot(curve.index, curve.to_numpy(), alpha=0.6, label=tag, **style)
    if curves:
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
    for signal_axis, (panel, lines) in zip(signal_axes, signals, strict=True):
        signal_axis.set_title(f"{panel.title}, mean over seeds", fontsize="medium")
        signal_axis.set(xlabel="training iterations", ylabel=panel.ylabel)
        for (signal, what), linestyle in zip(panel.lines, ("-", "--", ":"), strict=False):
            for key, mean in sorted(lines[signal].items()):
                signal_axis.plot(
                    mean.steps,
                    mean.mean,
                    color=f"C{augments.index(key[2]) % 10}",
                    linestyle=linestyle,
                    marker="os^D"[sizes.index(key[:2]) % 4],
                    markersize=3 if signal != ADA_RT else 0,
                    label=f"{label(key)}: {what} (n={mean.n})",
                )
        signal_axis.legend(fontsize="x-small")
        signal_axis.grid(alpha=0.3)
    failed = [run.cell for run in runs if run.failed]
    notes = [f"failed runs, not plotted: {', '.join(failed)}"] if failed else []
    if not_averaged and signals:
        notes.append(
            f"left out of the signal panels, their runs not one experiment: {', '.join(sorted(not_averaged))}"
        )
    note = "; ".join(notes)
    if note:
        figure.text(0.01, 0.01, note if len(note) < 150 else note[:147] + "...", fontsize="x-small")
    figure.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    buffer = io.BytesIO()
    # The failed runs also go into the PNG's text metadata.
    figure.savefig(buffer, format="png", metadata={"Title": f"{root.name} ablation", "Description": note})
    write_file_atomically(path, buffer.getvalue())

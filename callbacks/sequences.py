"""Series figures, drawn by the picture callbacks (`images.py`) in data units (the normaliser undone)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytorch_lightning as pl
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import Tensor

from lightning_genae.callbacks.applicability import ModelSpecificCallback
from lightning_genae.callbacks.pictures import interleaved, log_figure, log_image_grid
from lightning_genae.run_files import NORMALISER_FILE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SERIES_SHOWN = 8
# Up to this many channels a series is drawn as lines; beyond, as a heat map.
MAX_LINE_CHANNELS = 4


def series_figure(
    panels: Sequence[Sequence[Tensor]],
    titles: Sequence[str],
    labels: Sequence[str],
    channel_names: Sequence[str],
    suptitle: str,
) -> Figure:
    """One panel per item, each of `panels[i]` ([T, C] series) drawn in it: lines for few channels, heat maps
    of time against channel for many; one value scale, so a flat series looks flat beside a full cycle."""
    columns = 4
    # Imported here: matplotlib is only needed once a sequence run draws.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    channels = panels[0][0].shape[-1]
    as_lines = channels <= MAX_LINE_CHANNELS
    per_panel = 1 if as_lines else len(panels[0])
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(3.2 * columns, 2.4 * rows * (1 if as_lines else 0.9)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns * per_panel, squeeze=False, sharey=as_lines)
    low = min(float(series.min()) for series_set in panels for series in series_set)
    high = max(float(series.max()) for series_set in panels for series in series_set)
    colours = [f"C{index}" for index in range(channels)]
    styles = ["-", "--", ":"]
    for index, (series_set, title) in enumerate(zip(panels, titles, strict=True)):
        row, column = divmod(index, columns)
        if as_lines:
            axis = axes[row][column]
            for version, (series, label) in enumerate(zip(series_set, labels, strict=True)):
                for channel in range(channels):
                    axis.plot(
                        series[:, channel].numpy(),
                        styles[version % len(styles)],
                        color=colours[channel],
                        linewidth=1.2,
                        label=f"{label}, {channel_names[channel]}" if index == 0 else None,
                    )
            axis.set_title(title, fontsize=9)
            axis.tick_params(labelsize=7)
        else:
            # Time runs down, channels across (so smnist's rows stand as the digit).
            for version, (series, label) in enumerate(zip(series_set, labels, strict=True)):
                axis = axes[row][column * per_panel + version]
                axis.imshow(
                    series.numpy(), aspect="auto", cmap="gray", interpolation="nearest", vmin=low, vmax=high
                )
                axis.set_title(f"{title}: {label}", fontsize=8)
                axis.set_xticks([])
                axis.set_yticks([])
    for axis in axes.flat[len(panels) * per_panel :]:
        axis.axis("off")
    if as_lines:
        figure.legend(loc="lower center", ncol=min(6, channels * len(labels)), fontsize=8, frameon=False)
    figure.suptitle(suptitle, fontsize=10)
    # Fixed margins rather than tight_layout, which measures every label and costs seconds per figure.
    figure.subplots_adjust(
        left=0.05, right=0.98, top=0.88, bottom=0.14 if as_lines else 0.03, wspace=0.25, hspace=0.45
    )
    return figure


def log_versions(
    trainer: pl.Trainer,
    key: str,
    versions: Sequence[Tensor],
    labels: Sequence[str],
    titles: Sequence[str],
    what: str,
    step: int,
) -> None:
    """The run's `key` picture of item i of every version: image rows of 8, or series panels in data units."""
    if getattr(trainer.lightning_module, "data_kind", "image") != "sequence":
        log_image_grid(trainer, key, interleaved(versions), step, nrow=8)
        return
    datamodule = trainer.datamodule
    series = [datamodule.normaliser.denormalise(version.float().cpu()) for version in versions]
    names = getattr(datamodule, "channel_names", None)
    names = names or [f"channel {index + 1}" for index in range(series[0].shape[-1])]
    panels = list(zip(*series, strict=True))
    figure = series_figure(panels, titles, labels, names, f"{datamodule.name}: {what} (data units)")
    log_figure(trainer, key, figure, step)


class SaveNormaliser(ModelSpecificCallback):
    """`normaliser.json` in the run folder: the per-channel mean/std that map model units to data units."""

    def applies(self, pl_module: pl.LightningModule, datamodule: pl.LightningDataModule) -> bool:
        return getattr(datamodule, "normaliser", None) is not None

    # At the training's start, after the run folder's checks (`callbacks_for`'s WritesUnder, the first
    # callback): written at the fit's start, the file would be taken there for another run's.
    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.applies(pl_module, trainer.datamodule):
            normaliser = trainer.datamodule.normaliser
            run_dir = Path(trainer.default_root_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            normaliser.save(run_dir / NORMALISER_FILE)

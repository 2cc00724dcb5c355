"""Reporting a finished ablation grid: `ablation.csv`, `ablation.md` and `ablation.png` from its run folders.

`summarize` rebuilds the three files from whatever run folders exist under the root, so it can be re-run at
any time (after a partial grid, after re-running cells). Cells the grid planned (`grid.json`) that have not
finished are listed as missing, unfinished or running, never counted as failed. Metric names, their
backbones and which side of each is better come from the vocabulary in `lightning_genae.metrics.names`.
"""

from __future__ import annotations

import re
from pathlib import Path

from lightning_genae.errors import ConfigError
from lightning_genae.experiment.ablation.curves import ADA_RT, write_png
from lightning_genae.experiment.ablation.grid import (
    CSV_NAME,
    MD_NAME,
    PNG_NAME,
    grid_record,
    record_grid_cells,
    refuse_runs_of_no_grid,
    refuse_summary_files_of_no_grid,
    summary_config,
)
from lightning_genae.experiment.ablation.runs import (
    CellRun,
    describe_progress,
    load_runs,
    main_headline,
    table_disagreement,
)
from lightning_genae.experiment.ablation.tables import rows_not_averaged, write_csv, write_md
from lightning_genae.experiment.ablation.tuning import refresh_tuning_record
from lightning_genae.metrics.names import BACKBONES, try_parse

__all__ = ["ADA_RT", "describe_progress", "summarize"]


def summarize(root: Path) -> dict[str, Path]:
    """Rebuild ablation.csv, .md and .png from the run folders under `root`; returns their paths.

    A root whose grid.json is not a grid's, or that has none and holds summary files no grid wrote or runs
    not named as a grid's cells, is refused before anything is written.
    """
    root = Path(root)
    recorded = grid_record(root, "--summarize")
    refuse_summary_files_of_no_grid(root, "--summarize")
    refuse_runs_of_no_grid(root, "--summarize")
    runs = load_runs(root)
    _refuse_what_no_loaded_plugin_declares(root, runs)
    # The tuning stage as the tuning cells' folders are now: array tasks finish in any order.
    refresh_tuning_record(root)
    if recorded is None:
        # Cell folders from before grid.json: the summary files written beside them are a grid's, so the
        # root becomes one (a later grid into it continues it rather than refusing them as a user's).
        record_grid_cells(root, [run.cell for run in runs])
    headline = main_headline(runs)
    paths = {"csv": root / CSV_NAME, "md": root / MD_NAME, "png": root / PNG_NAME}
    write_csv(paths["csv"], runs)
    write_md(paths["md"], root, runs, headline, figure=PNG_NAME)
    write_png(paths["png"], root, runs, headline, not_averaged=rows_not_averaged(root, runs))
    apart = table_disagreement(runs)
    if apart:
        # Imported here: console imports Lightning, which --help and --print-config never load.
        from lightning_genae.progress import warn

        warn(
            f"note: the rows of {paths['md']} differ in more than their augmentation and training size "
            f"({', '.join(apart)}), so they do not rank against each other; its note says which row ran what"
        )
    return paths


def _refuse_what_no_loaded_plugin_declares(root: Path, runs: list[CellRun]) -> None:
    """Refuse a summary whose runs record options set, or feature metrics, that nothing loaded declares:
    a plug-in's, summarized without it, its metric's column would go and its augmentation's option would
    read as a difference between the rows (`--flip-p differs`): a correct report replaced by a wrong one."""
    from lightning_genae.augmentation import augmentation_options
    from lightning_genae.datamodules import dataset_options
    from lightning_genae.experiment.config import CONFIG_FIELDS
    from lightning_genae.experiment.resolve import model_option_names

    known = {*CONFIG_FIELDS, *model_option_names(), *augmentation_options(), *dataset_options()}
    options = sorted(
        {
            name
            for run in runs
            if run.ok
            for name, value in summary_config(run.summary).items()
            if value is not None and name not in known
        }
    )
    metrics = sorted(
        {
            name
            for run in runs
            if run.ok
            for name in run.final_metrics
            if _FEATURE_METRIC.match(name) and try_parse(name) is None
        }
    )
    if options or metrics:
        unknown = [*(f"option {name}" for name in options), *(f"metric {name}" for name in metrics)]
        raise ConfigError(
            f"--summarize {root}: its runs record {', '.join(unknown)}, which nothing loaded declares; put "
            f"the plug-ins' modules in GENAE_PLUGINS, as when the grid ran, and summarize again"
        )


# A feature-space metric as runs log one: `test/<name>_<backbone>`.
_FEATURE_METRIC = re.compile(rf"^test/\w+_({'|'.join(BACKBONES)})$")

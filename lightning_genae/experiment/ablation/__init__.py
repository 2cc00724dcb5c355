"""Ablation grids over augmentations, train sizes and seeds: `cells` plans them, `tuning` chooses each arm's
options on validation, and `summarize` writes ablation.csv, .md (`tables`) and .png (`curves`)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from lightning_genae.errors import ConfigError
from lightning_genae.experiment.ablation.cells import (
    CSV_NAME,
    MD_NAME,
    PNG_NAME,
    check_grid_root,
    grid_record,
    record_grid_cells,
)
from lightning_genae.experiment.ablation.conflicts import summary_config
from lightning_genae.experiment.ablation.curves import write_png
from lightning_genae.experiment.ablation.runs import (
    CellRun,
    describe_progress,
    load_runs,
    main_headline,
    row_disagreement,
    table_disagreement,
)
from lightning_genae.experiment.ablation.tables import arm_choices, write_csv, write_md
from lightning_genae.experiment.ablation.tuning import read_tuning_record, refresh_tuning_record
from lightning_genae.metrics.names import BACKBONES, try_parse

__all__ = ["describe_progress", "summarize"]

# A feature-space metric as runs log one: `test/<name>_<backbone>`.
_FEATURE_METRIC = re.compile(rf"^test/\w+_({'|'.join(BACKBONES)})$")


def summarize(root: Path) -> dict[str, Path]:
    """ablation.csv, .md and .png from the runs under `root` (unfinished cells: pending); their paths."""
    root = Path(root)
    check_grid_root(root, "--summarize")
    runs = load_runs(root)
    _refuse_what_no_loaded_plugin_declares(root, runs)
    refresh_tuning_record(root)
    if grid_record(root) is None:
        record_grid_cells(root, [run.cell for run in runs])
    headline = main_headline(runs)
    choices = arm_choices(read_tuning_record(root))
    # load_runs sorts the runs by train size and augment: each row's runs come together.
    rows = itertools.groupby(runs, key=lambda run: run.row)
    not_averaged = [row for row, group in rows if row_disagreement(group, choices.get(row))]
    paths = {"csv": root / CSV_NAME, "md": root / MD_NAME, "png": root / PNG_NAME}
    write_csv(paths["csv"], runs)
    write_md(paths["md"], root, runs, headline, figure=PNG_NAME)
    write_png(paths["png"], root, runs, headline, not_averaged=not_averaged)
    apart = table_disagreement(runs)
    if apart:
        from lightning_genae.progress import warn  # imports Lightning, which --help never loads

        warn(f"note: the rows of {paths['md']} also differ in {', '.join(apart)}, so they do not rank")
    return paths


def _refuse_what_no_loaded_plugin_declares(root: Path, runs: list[CellRun]) -> None:
    """Refuse a summary whose runs record options or feature metrics nothing loaded declares: a plug-in's,
    summarized without it, would lose its column or read as a difference between the rows."""
    from lightning_genae.augmentation import augmentation_options
    from lightning_genae.datamodules import dataset_options
    from lightning_genae.experiment.config import CONFIG_FIELDS
    from lightning_genae.experiment.resolve import model_option_names

    known = {*CONFIG_FIELDS, *model_option_names(), *augmentation_options(), *dataset_options()}
    ok_runs = [run for run in runs if run.ok]
    options = {
        name for run in ok_runs for name, value in summary_config(run.summary).items() if value is not None
    }
    metrics = {name for run in ok_runs for name in run.final_metrics if _FEATURE_METRIC.match(name)}
    unknown = [f"option {name}" for name in sorted(options - known)]
    unknown += [f"metric {name}" for name in sorted(metrics) if try_parse(name) is None]
    if unknown:
        raise ConfigError(
            f"--summarize {root}: its runs record {', '.join(unknown)}, which nothing loaded declares; put "
            "the plug-ins' modules in GENAE_PLUGINS, as when the grid ran, and summarize again"
        )

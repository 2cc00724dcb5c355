"""Ablation grids over augmentations, train sizes and seeds: `cells` plans them, `grid` runs them, `tuning`
chooses each arm's options on validation first, and `report` tables them."""

from lightning_genae.experiment.ablation.cells import (
    GridCell,
    GridPlan,
    check_grid_root,
    expand_grid,
    plan_grid,
    record_grid_cells,
)
from lightning_genae.experiment.ablation.grid import CellOutcome, CellStart, run_grid
from lightning_genae.experiment.ablation.report import summarize
from lightning_genae.experiment.ablation.runs import describe_progress

__all__ = [
    "CellOutcome",
    "CellStart",
    "GridCell",
    "GridPlan",
    "check_grid_root",
    "describe_progress",
    "expand_grid",
    "plan_grid",
    "record_grid_cells",
    "run_grid",
    "summarize",
]

"""Ablation grids over augmentations, train sizes and seeds: `grid` runs the cells, `report` tables them."""

from lightning_genae.ablation.grid import CellOutcome, GridCell, GridPlan, expand_grid, plan_grid, run_grid
from lightning_genae.ablation.report import summarize

__all__ = ["CellOutcome", "GridCell", "GridPlan", "expand_grid", "plan_grid", "run_grid", "summarize"]

"""Ablation grids over augmentations, train sizes and seeds: `grid` runs the cells, `report` tables them."""

from lightning_genae.ablation.grid import CellOutcome, GridCell, expand_grid, run_grid
from lightning_genae.ablation.report import summarize

__all__ = ["CellOutcome", "GridCell", "expand_grid", "run_grid", "summarize"]

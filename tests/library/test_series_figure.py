import math

import pytest
import torch

from lightning_genae.callbacks.sequences import series_figure

pytestmark = pytest.mark.quick


def _panels(channels: int) -> list[list[torch.Tensor]]:
    time = torch.linspace(0, 2 * math.pi, 24)[:, None].expand(24, channels)
    flat, cycle = torch.full((24, channels), 0.5), 0.5 + 0.5 * torch.sin(time)
    return [[flat, flat], [cycle, cycle]]


def test_line_panels_share_one_value_axis_so_a_flat_series_looks_flat():
    figure = series_figure(_panels(2), ["flat", "cycle"], ["real", "generated"], ["a", "b"], "samples")
    flat_axis, cycle_axis = figure.axes[:2]
    assert flat_axis.get_ylim() == cycle_axis.get_ylim()
    low, high = flat_axis.get_ylim()
    assert low <= 0.0 and high >= 1.0


def test_heat_map_panels_share_one_colour_scale():
    panels = _panels(8)
    figure = series_figure(panels, ["flat", "cycle"], ["real", "generated"], list("abcdefgh"), "samples")
    limits = {image.get_clim() for axis in figure.axes for image in axis.get_images()}
    assert len(limits) == 1
    ((low, high),) = limits
    cycle = panels[1][0]
    assert (low, high) == pytest.approx((float(cycle.min()), float(cycle.max())))

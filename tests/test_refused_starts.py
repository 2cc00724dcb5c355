"""A start that is refused (exit 2) leaves nothing behind and names the fix in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import TINY_RUN

from lightning_genae.cli import main


def one_line(capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


@pytest.mark.parametrize("index", ["99", "-1"])
def test_a_grid_index_out_of_range_leaves_no_grid_root(index, tmp_path, capsys):
    root = tmp_path / "grid"
    args = ["--model", "ae", *TINY_RUN, "--seeds", "0,1", "--max-steps", "2", "--output", str(root)]
    assert main([*args, "--grid-index", index]) == 2
    one_line(capsys, f"--grid-index {index} is out of range", "2 cells", "0..1")
    assert not root.exists(), "no grid.json, no root folder"

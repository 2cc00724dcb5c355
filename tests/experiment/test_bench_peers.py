"""bench/peers.py from a clean clone: the hand-written peers against run.py, their table and JSON, and a
refused --device cuda where torch sees no GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "peers.py"


def run_peers(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_peers_times_both_sides_in_alternated_blocks_and_writes_the_table(tmp_path: Path) -> None:
    report = tmp_path / "peers.json"
    args = ["--families", "gan,rae", "--data", "digits", "--warmup", "1", "--block", "2", "--repeats", "2"]
    result = run_peers([*args, "--json", str(report)], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads(report.read_text())
    assert written["device"] == "cpu" and written["threads"] == 1
    rows = {row["family"]: row for row in written["rows"]}
    assert set(rows) == {"gan", "rae"}
    for row in rows.values():
        # Two timed blocks of two steps each side (the peer's first block is its warm-up).
        assert row["steps_each"] == 4 and row["peer"] == "hand-written loop"
        assert row["ours_median_ms"] > 0 and row["peer_median_ms"] > 0
        assert row["ratio"] == pytest.approx(row["ours_median_ms"] / row["peer_median_ms"], rel=0.01)
    assert "ratio: ours over the peer's median ms per step" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: --device cuda would run")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path: Path) -> None:
    result = run_peers(["--families", "gan", "--device", "cuda"], tmp_path)
    assert result.returncode == 2 and "no CUDA device" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

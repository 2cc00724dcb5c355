"""Every path a user types is checked before training starts: a bad one is one line and exit 2, and no run
folder is left."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from refusals import one_line
from tiny import TINY_RUN

from lightning_genae.experiment.cli import main

pytestmark = pytest.mark.quick

TINY_GAN = ["--model", "gan", *TINY_RUN, "--max-steps", "2"]


def raw_pickle(folder: Path) -> Path:
    path = folder / "raw.pth"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "absent.pth", "does not exist"),
        (lambda tmp: tmp, "is not a file written by torch.save"),
        (raw_pickle, "is not a file written by torch.save"),
    ],
    ids=["missing", "folder", "raw pickle"],
)
def test_bad_inception_weights_are_refused_before_anything_runs(make, message, tmp_path, capsys):
    weights = make(tmp_path)
    out = tmp_path / "run"
    args = [*TINY_GAN, "--backbone", "inception", "--inception-weights", str(weights), "--output", str(out)]
    assert main(args) == 2
    one_line(capsys, f"--inception-weights {weights}", message, "pass the path of")
    assert not out.exists()


def test_weights_that_are_not_inceptions_are_refused_before_training(tmp_path, capsys):
    pytest.importorskip("torch_fidelity")
    weights = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(2, 2)}, weights)
    out = tmp_path / "run"
    args = [*TINY_GAN, "--backbone", "inception", "--inception-weights", str(weights), "--output", str(out)]
    assert main(args) == 2
    one_line(capsys, str(weights), "InceptionV3")
    assert not out.exists(), "refused before the first step: no run folder"


def test_inception_weights_with_another_backbone_are_refused(tmp_path, capsys):
    weights = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(2, 2)}, weights)
    args = [*TINY_GAN, "--backbone", "classifier", "--inception-weights", str(weights)]
    assert main([*args, "--output", str(tmp_path / "run")]) == 2
    one_line(capsys, "--inception-weights", "--backbone inception")

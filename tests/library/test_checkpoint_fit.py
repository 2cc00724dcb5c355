"""Every checkpoint load (--resume, --evaluate, --augment-ckpt) checks that the weights fit the model and are
finite, and refuses with one line and exit 2 before anything trains or is measured."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from refusals import one_line

from lightning_genae.experiment.cli import main

pytestmark = pytest.mark.quick


@pytest.fixture()
def run_copy(tiny_ae_run: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_ae_run, run_dir)
    return run_dir


def edit_weights(checkpoint: Path, change: Callable[[dict], dict]) -> None:
    contents = torch.load(checkpoint, map_location="cpu", weights_only=True)
    contents["state_dict"] = change(dict(contents["state_dict"]))
    torch.save(contents, checkpoint)


def reshape_first(state: dict) -> dict:
    name = next(iter(state))
    state[name] = torch.zeros(*state[name].shape[:-1], state[name].shape[-1] + 1)
    return state


def poison_first(state: dict) -> dict:
    name = next(name for name, tensor in state.items() if tensor.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    return state


EDITS = {"a reshaped weight": (reshape_first, "shapes differ"), "no weights": (lambda _: {}, "missing")}
EDITS["NaN weights"] = (poison_first, "NaN or inf")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("edit", list(EDITS))
def test_resume_of_weights_that_do_not_fit_or_are_not_finite_is_one_line(edit, run_copy, capsys):
    change, expected = EDITS[edit]
    edit_weights(run_copy / "checkpoints" / "last.ckpt", change)
    before = snapshot(run_copy)
    assert main(["--resume", "last", "--output", str(run_copy), "--max-steps", "6"]) == 2
    one_line(capsys, "--resume", str(run_copy / "checkpoints" / "last.ckpt"), expected)
    assert snapshot(run_copy) == before, "nothing trained, nothing written"


@pytest.mark.parametrize("edit", list(EDITS))
def test_evaluate_of_weights_that_do_not_fit_or_are_not_finite_is_one_line(edit, run_copy, capsys):
    change, expected = EDITS[edit]
    checkpoint = run_copy / "checkpoints" / "last.ckpt"
    edit_weights(checkpoint, change)
    assert main(["--evaluate", str(checkpoint)]) == 2
    one_line(capsys, "--evaluate", expected)
    assert not (run_copy / "eval.json").exists()


def test_augment_ckpt_with_nan_weights_is_one_line(run_copy, tmp_path, capsys):
    checkpoint = run_copy / "checkpoints" / "last.ckpt"
    edit_weights(checkpoint, poison_first)
    out = tmp_path / "augmented"
    args = ["--model", "ae", "--data", "digits", "--width", "8", "--latent-dim", "8", "--max-steps", "2"]
    assert main([*args, "--augment", "ae", "--augment-ckpt", str(checkpoint), "--output", str(out)]) == 2
    one_line(capsys, "--augment-ckpt", "NaN or inf")
    assert not out.exists()

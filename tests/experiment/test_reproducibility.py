"""Reproducibility on the CPU: the same seed gives the same numbers, and a stopped run resumes exactly.

A run stopped at a checkpoint and resumed must end where an uninterrupted run of the same length ends: the
global random streams (GAN noise, DiffAugment), the AE augmentation's own generator and the position in
the training data's order all go into the checkpoint and come back on resume.
"""

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks import Callback
from tiny import ON_CPU, TINY_RUN, csv_fields

from lightning_genae.callbacks.random_state import global_random_state, set_global_random_state
from lightning_genae.datamodules import build_datamodule
from lightning_genae.datamodules.loaders import EpochShuffle, ResumableLoader
from lightning_genae.experiment import augmenter as latent_module
from lightning_genae.experiment import train as train_module
from lightning_genae.experiment.cli import main
from lightning_genae.experiment.trainer import build_callbacks

# 200 training digits in batches of 32: 6 iterations an epoch, so 4 + 4 iterations stop part-way through the
# first epoch and cross into the second.
RUN = [*TINY_RUN, *ON_CPU, "--train-size", "200", "--eval-every", "4", "--image-every", "4"]
RUN += ["--ckpt-every", "4", "--eval-samples", "100", "--model", "gan"]
AUGMENTER = ["--augmenter-width", "8", "--augmenter-latent-dim", "8", "--augmenter-steps", "10"]
AUGMENTS = {"none": [], "ae+diffaug": ["--augment", "ae+diffaug", *AUGMENTER]}
HALF, FULL = 4, 8


# One thread: the numbers must not depend on how a reduction was split across threads.


class CopyCheckpointBeforeIteration(Callback):
    """Copies last.ckpt as it is before iteration `iteration + 1` starts: what a run killed there leaves."""

    def __init__(self, iteration: int, target: Path) -> None:
        self.iteration = iteration
        self.target = target

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.iteration == self.iteration and not self.target.exists():
            shutil.copy(Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt", self.target)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Per augmentation: two uninterrupted runs of FULL iterations (the second leaves a copy of its
    checkpoint at HALF, as if killed there), a run of HALF, and both checkpoints resumed to FULL."""
    root = tmp_path_factory.mktemp("reproducibility")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(latent_module, "default_cache_dir", lambda: root / "augmenters")
        made: dict[str, dict[str, Path]] = {}
        for name, extra in AUGMENTS.items():
            folder = root / name.replace("+", "-")
            args = [*RUN, *extra]
            paths = {label: folder / label for label in ("first", "second", "half", "resumed", "killed")}
            assert main([*args, "--max-steps", str(FULL), "--output", str(paths["first"])]) == 0
            killed_checkpoint = folder / f"killed-at-{HALF}.ckpt"
            copier = CopyCheckpointBeforeIteration(HALF, killed_checkpoint)
            patch.setattr(train_module, "build_callbacks", lambda *a, c=copier: [*build_callbacks(*a), c])
            assert main([*args, "--max-steps", str(FULL), "--output", str(paths["second"])]) == 0
            patch.setattr(train_module, "build_callbacks", build_callbacks)
            assert main([*args, "--max-steps", str(HALF), "--output", str(paths["half"])]) == 0
            for label, checkpoint in (
                ("resumed", paths["half"] / "checkpoints" / "last.ckpt"),
                ("killed", killed_checkpoint),
            ):
                resume = ["--resume", str(checkpoint), "--max-steps", str(FULL)]
                assert main([*resume, "--output", str(paths[label])]) == 0
            made[name] = paths
    return made


def final_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "summary.json").read_text())["final_metrics"]


def rows_after(run_dir: Path, step: int) -> list[dict[str, str]]:
    """metrics.csv rows of iterations after `step`, Lightning's epoch column included."""
    with (run_dir / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    return [row for row in rows if int(row["step"]) > step]


@pytest.mark.parametrize("augment", list(AUGMENTS))
def test_the_same_seed_twice_gives_an_identical_metrics_csv(runs, augment):
    first, second = runs[augment]["first"], runs[augment]["second"]
    assert (first / "metrics.csv").read_bytes() == (second / "metrics.csv").read_bytes()
    assert final_metrics(first) == final_metrics(second)


@pytest.mark.parametrize("stopped", ["finished at HALF", "killed at HALF"])
@pytest.mark.parametrize("augment", list(AUGMENTS))
def test_a_resumed_run_ends_with_the_uninterrupted_runs_final_metrics(runs, augment, stopped):
    uninterrupted = runs[augment]["first"]
    resumed = runs[augment]["resumed" if stopped.startswith("finished") else "killed"]
    assert json.loads((resumed / "summary.json").read_text())["global_step"] == FULL
    assert final_metrics(resumed) == final_metrics(uninterrupted)
    # Every row the resumed run wrote (training losses, validation metrics, the epoch) is the uninterrupted
    # run's.
    resumed_rows = rows_after(resumed, HALF)
    assert resumed_rows and resumed_rows == rows_after(uninterrupted, HALF)


@pytest.mark.parametrize(
    ("data_on_device", "budget"),
    [("on", []), ("off", []), ("on", ["--max-steps", "6"])],
    ids=["device-batches", "host-loader", "with-max-steps"],
)
def test_a_run_finished_by_max_epochs_continued_to_more_ends_as_the_uninterrupted_run(
    tmp_path, data_on_device, budget
):
    """Lightning gives a loader its state back only when it counts the fit as restarting, which a fit by
    epochs resumed after its last epoch ended is not: the data's order must still go on from the next
    epoch, and the next epoch (with --max-steps given, which Lightning does count as restarting) must be
    a whole one."""
    run = [*TINY_RUN, *ON_CPU, "--model", "ae", "--train-size", "64", "--eval-every", "100"]
    run += ["--data-on-device", data_on_device]  # 64 digits in batches of 32: 2 iterations an epoch
    straight, first, continued = tmp_path / "straight", tmp_path / "first", tmp_path / "continued"
    assert main([*run, "--max-epochs", "3", *budget, "--output", str(straight)]) == 0
    assert main([*run, "--max-epochs", "2", "--output", str(first)]) == 0
    resume = ["--resume", str(first / "checkpoints" / "last.ckpt"), "--max-epochs", "3", *budget]
    assert main([*resume, "--output", str(continued)]) == 0
    assert json.loads((continued / "summary.json").read_text())["global_step"] == 6
    assert final_metrics(continued) == final_metrics(straight)
    continued_rows = rows_after(continued, 4)
    assert continued_rows and continued_rows == rows_after(straight, 4)


@pytest.mark.parametrize("data_on_device", ["on", "off"])
def test_a_run_stopped_part_way_through_an_epoch_continued_by_epochs_ends_as_the_uninterrupted_run(
    tmp_path, data_on_device
):
    """Lightning ends an epoch where --max-steps stops a fit and counts it as done: continued to three
    epochs, the run must still train three whole epochs, the cut one finished as the same epoch."""
    run = [*TINY_RUN, *ON_CPU, "--model", "ae", "--train-size", "64", "--eval-every", "100"]
    run += ["--data-on-device", data_on_device]  # 64 digits in batches of 32: 2 iterations an epoch
    straight, first, continued = tmp_path / "straight", tmp_path / "first", tmp_path / "continued"
    budget = ["--max-epochs", "3", "--max-steps", "100"]
    assert main([*run, *budget, "--output", str(straight)]) == 0
    assert main([*run, "--max-steps", "3", "--output", str(first)]) == 0
    resume = ["--resume", str(first / "checkpoints" / "last.ckpt"), *budget]
    assert main([*resume, "--output", str(continued)]) == 0
    assert json.loads((continued / "summary.json").read_text())["global_step"] == 6
    assert final_metrics(continued) == final_metrics(straight)
    continued_rows = rows_after(continued, 3)
    assert continued_rows and continued_rows == rows_after(straight, 3)


def test_the_checkpoint_holds_the_random_streams_and_the_place_in_the_data(runs):
    checkpoint = runs["ae+diffaug"]["half"] / "checkpoints" / "last.ckpt"
    contents = torch.load(checkpoint, map_location="cpu", weights_only=True)
    (random_state,) = [state for key, state in contents["callbacks"].items() if "RandomState" in key]
    assert set(random_state) >= {"torch", "numpy", "python"}
    assert contents["AugmentedDataModule"]["augment_generator"].dtype == torch.uint8
    loader_state = contents["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state == [{"epoch": 0, "batches": HALF}]


# ----- the pieces, without a run -----


def test_a_loader_resumed_part_way_through_an_epoch_continues_its_order():
    # The host loader's path; the device path's batches are checked against it in test_data_on_device.py.
    data = build_datamodule("digits", data_dir=".", batch_size=32, train_size=200, data_on_device="off")
    images, labels = data.split_tensors("train")
    uninterrupted = data.loader_over(images, labels, train=True)
    assert isinstance(uninterrupted, ResumableLoader) and isinstance(uninterrupted.sampler, EpochShuffle)
    epochs = [[batch[1].tolist() for batch in uninterrupted] for _ in range(2)]
    assert len(epochs[0]) == 6 and epochs[0] != epochs[1], "each epoch its own order"

    stopped = data.loader_over(images, labels, train=True)
    seen = []
    for batch in stopped:
        seen.append(batch[1].tolist())
        if len(seen) == HALF:
            break
    state = stopped.state_dict()
    assert state == {"epoch": 0, "batches": HALF}
    resumed = data.loader_over(images, labels, train=True)
    resumed.load_state_dict(state)
    rest = [batch[1].tolist() for batch in resumed]
    assert seen + rest == epochs[0], "the resumed epoch finishes the order it started"
    assert [batch[1].tolist() for batch in resumed] == epochs[1]


def test_the_global_random_state_survives_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    state = global_random_state()
    expected = (torch.rand(4), np.random.rand(2), random.random())
    path = tmp_path / "state.pt"
    torch.save(state, path)
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    set_global_random_state(torch.load(path, weights_only=True))
    again = (torch.rand(4), np.random.rand(2), random.random())
    assert torch.equal(again[0], expected[0]) and np.array_equal(again[1], expected[1])
    assert again[2] == expected[2]


# ----- a grid through the command line -----

GRID = [*TINY_RUN, *ON_CPU, "--model", "gan", "--max-steps", "3", "--eval-samples", "100", *AUGMENTER]
GRID += ["--augment", "none,ae", "--seeds", "0"]


@pytest.mark.slow
def test_the_same_grid_twice_gives_identical_metrics_csvs_and_ablation_csv(tmp_path, monkeypatch):
    # Each grid trains its augmenter into a cache of its own, so the augmenter's training is compared too.
    roots = {}
    for label in ("first", "second"):
        cache = tmp_path / label / "cache"
        monkeypatch.setattr(latent_module, "default_cache_dir", lambda cache=cache: cache)
        roots[label] = tmp_path / label / "grid"
        assert main([*GRID, "--output", str(roots[label])]) == 0
        assert list(cache.glob("*.ckpt")), "the ae cell trained an augmenter of its own"
    first, second = roots["first"], roots["second"]
    cells = sorted(path.parent.name for path in first.glob("*/metrics.csv"))
    assert cells == ["ae-tsfull-seed0", "none-tsfull-seed0"]
    for cell in cells:
        assert (first / cell / "metrics.csv").read_bytes() == (second / cell / "metrics.csv").read_bytes()
    assert csv_fields(first / "ablation.csv", leave_out="wall_time_s") == csv_fields(
        second / "ablation.csv", leave_out="wall_time_s"
    )


# ----- validation draws from the run's seed, not from training's streams -----

# The VAE's validation loss draws posterior samples from the global generator.
VAE = [*TINY_RUN, *ON_CPU, "--model", "vae", "--train-size", "200", "--backbone", "none", "--max-steps", "6"]


def validation_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as file:
        return [row for row in csv.DictReader(file) if row["val/loss"]]


def training_rows(run: Path) -> dict[str, dict[str, str]]:
    """The training values by step (how often they are written follows --eval-every)."""
    with (run / "metrics.csv").open(newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["train/loss"]]
    return {row["step"]: {k: v for k, v in row.items() if k.startswith("train/")} for row in rows}


@pytest.mark.quick
def test_how_often_a_run_validates_changes_nothing_in_its_training(tmp_path):
    assert main([*VAE, "--eval-every", "2", "--output", str(tmp_path / "often")]) == 0
    assert main([*VAE, "--eval-every", "6", "--output", str(tmp_path / "once")]) == 0
    often, once = training_rows(tmp_path / "often"), training_rows(tmp_path / "once")
    # Validated at 2 and 4 in between, or not: the training values after them are the same.
    assert "5" in once and once == {step: often[step] for step in once}
    # The last validation of each is the same weights' seeded one.
    assert validation_rows(tmp_path / "often")[-1] == validation_rows(tmp_path / "once")[-1]


def test_the_validation_at_the_last_iteration_is_written_once_and_is_the_final_evaluation(tmp_path):
    run = tmp_path / "run"
    assert main([*VAE, "--eval-every", "3", "--output", str(run)]) == 0
    rows = validation_rows(run)
    assert [row["step"] for row in rows] == ["3", "6"]
    final = json.loads((run / "summary.json").read_text())["final_metrics"]
    assert float(rows[-1]["val/loss"]) == final["val/loss"]
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert main(["--evaluate", str(checkpoint), "--output", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "eval.json").read_text())["metrics"]
    assert again["val/loss"] == final["val/loss"] and again["test/loss"] == final["test/loss"]

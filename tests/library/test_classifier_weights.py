"""--classifier-weights: a feature classifier given as a file is used for the image metrics, and a file that
cannot serve the run is refused in one line before training."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from refusals import one_line
from tiny import TINY_RUN

from lightning_genae.cache import file_sha256
from lightning_genae.datamodules import build_datamodule
from lightning_genae.experiment.cli import main
from lightning_genae.metrics import classifier as classifier_lib

TINY_GAN = ["--model", "gan", *TINY_RUN, "--max-steps", "3", "--eval-samples", "60"]


def classifier_file(folder: Path, *, data: str, image_shape: tuple[int, int, int], **meta: str) -> Path:
    """An untrained classifier checkpoint in the classifier command's format, recorded as `data`'s."""
    config = classifier_lib.ClassifierConfig(image_shape=image_shape, num_classes=10)
    path = folder / f"classifier-{data}.pt"
    classifier_lib.save_checkpoint(
        classifier_lib.FeatureClassifier(config), path, data=data, test_accuracy=0.5, **meta
    )
    return path


@pytest.mark.parametrize("same_images", [True, False], ids=["same-images", "other-images"])
def test_a_classifier_trained_on_other_images_is_used_and_said_so_in_the_run_record(
    same_images, tmp_path, capsys
):
    own = build_datamodule("digits", data_dir=tmp_path).content_sha256("train")
    weights = classifier_file(
        tmp_path, data="digits", image_shape=(1, 16, 16), train_sha256=own if same_images else "0" * 64
    )
    run_dir = tmp_path / "run"
    assert main([*TINY_GAN, "--classifier-weights", str(weights), "--output", str(run_dir)]) == 0
    said = "was not trained on this run's digits training images" in capsys.readouterr().err
    recorded = "trained on other training images than this run's" in (run_dir / "summary.json").read_text()
    assert said is recorded is not same_images


def test_a_given_classifier_is_the_one_the_run_measures_with(tmp_path, capsys):
    weights = classifier_file(tmp_path, data="digits", image_shape=(1, 16, 16))
    run_dir = tmp_path / "run"
    assert main([*TINY_GAN, "--classifier-weights", str(weights), "--output", str(run_dir)]) == 0
    sha256 = file_sha256(weights)
    assert f"features of the classifier (digits, given as {weights.name}, sha256 {sha256[:8]}" in (
        capsys.readouterr().out
    )
    # The shipped digits classifier gives other features: the untrained one's FD differs from it.
    shipped = tmp_path / "shipped"
    assert main([*TINY_GAN, "--output", str(shipped)]) == 0
    given_fd = (run_dir / "summary.json").read_text().split('"val/fd_classifier": ')[1].split(",")[0]
    shipped_fd = (shipped / "summary.json").read_text().split('"val/fd_classifier": ')[1].split(",")[0]
    assert given_fd != shipped_fd


def test_a_copy_of_the_shipped_classifier_gives_the_shipped_numbers(tmp_path):
    copy = tmp_path / "copy.pt"
    shutil.copyfile(classifier_lib.WEIGHTS_DIR / "classifier-digits.pt", copy)
    given, shipped = tmp_path / "given", tmp_path / "shipped"
    assert main([*TINY_GAN, "--classifier-weights", str(copy), "--output", str(given)]) == 0
    assert main([*TINY_GAN, "--output", str(shipped)]) == 0
    metrics = [(folder / "metrics.csv").read_text() for folder in (given, shipped)]
    assert metrics[0] == metrics[1]


def test_a_resume_measures_with_the_runs_classifier_and_refuses_another(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main([*TINY_GAN, "--output", str(run_dir)]) == 0  # the shipped classifier
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    other = classifier_file(tmp_path, data="digits", image_shape=(1, 16, 16))
    capsys.readouterr()
    resume = ["--resume", "last", "--output", str(run_dir), "--max-steps", "6"]
    assert main([*resume, "--classifier-weights", str(other)]) == 2
    one_line(capsys, "the run's image metrics were measured with the classifier of sha256", "start a new run")
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before
    # The same weights under another name are the same backbone.
    copy = tmp_path / "copy.pt"
    shutil.copyfile(classifier_lib.WEIGHTS_DIR / "classifier-digits.pt", copy)
    assert main([*resume, "--classifier-weights", str(copy)]) == 0


def text_file(folder: Path) -> Path:
    (folder / "text.pt").write_text("not torch")
    return folder / "text.pt"


def tensors_file(folder: Path) -> Path:
    torch.save({"weights": torch.zeros(2)}, folder / "other.pt")
    return folder / "other.pt"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "absent.pt", "does not exist"),
        (lambda tmp: tmp, "not a file written by torch.save"),
        (text_file, "not a file written by torch.save"),
        (lambda tmp: classifier_file(tmp, data="mnist", image_shape=(1, 16, 16)), "was trained on mnist"),
        (lambda tmp: classifier_file(tmp, data="digits", image_shape=(1, 28, 28)), "takes (1, 28, 28)"),
        (tensors_file, "unreadable"),
    ],
    ids=["missing", "folder", "not torch", "other dataset", "other shape", "not a classifier"],
)
def test_a_file_that_cannot_serve_the_run_is_refused_before_training(make, message, tmp_path, capsys):
    weights = make(tmp_path)
    out = tmp_path / "run"
    assert main([*TINY_GAN, "--classifier-weights", str(weights), "--output", str(out)]) == 2
    one_line(capsys, str(weights), message)
    assert not out.exists()


def test_a_grid_with_a_classifier_of_another_dataset_fails_each_cell_before_it_trains(tmp_path, capsys):
    weights = classifier_file(tmp_path, data="mnist", image_shape=(1, 16, 16))
    root = tmp_path / "grid"
    grid = [*TINY_GAN, "--seeds", "0,1", "--classifier-weights", str(weights), "--output", str(root)]
    assert main(grid) == 1
    assert capsys.readouterr().err.count("was trained on mnist") >= 2
    cells = [path for path in root.iterdir() if path.is_dir()]
    assert len(cells) == 2
    assert all((cell / "failed.json").is_file() and not (cell / "checkpoints").exists() for cell in cells)


def test_classifier_weights_with_another_backbone_or_series_are_refused(tmp_path, capsys):
    weights = classifier_file(tmp_path, data="digits", image_shape=(1, 16, 16))
    args = [*TINY_GAN, "--backbone", "inception", "--classifier-weights", str(weights)]
    assert main([*args, "--output", str(tmp_path / "a")]) == 2
    one_line(capsys, "--classifier-weights", "--backbone classifier")
    args = ["--model", "rae", "--data", "sines", "--classifier-weights", str(weights)]
    assert main([*args, "--output", str(tmp_path / "b")]) == 2
    one_line(capsys, "--classifier-weights", "sequence data")


def test_a_train_size_run_is_compared_with_the_whole_training_split_the_classifier_learnt_from(tmp_path):
    whole = build_datamodule("digits", data_dir=tmp_path)
    subset = build_datamodule("digits", data_dir=tmp_path, train_size=100)
    assert subset.full_training_sha256() == whole.content_sha256("train") == whole.full_training_sha256()
    assert subset.content_sha256("train") != whole.content_sha256("train")

"""The checkpoint chosen on validation (best.ckpt) is evaluated on the test split at the end of a run."""

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny import TINY_RUN

from lightning_genae.experiment.cli import main
from lightning_genae.experiment.evaluate import evaluate_selected_checkpoint

# Validation at iterations 3 and 6, and at the last one, 7. The run is resumed at 6 for its last iteration
# with a learning rate a thousand times its own, which wrecks the generator: the checkpoint chosen on
# validation (3 or 6) differs from the final weights and is evaluated again.
RUN = [*TINY_RUN, "--eval-samples", "50", "--image-every", "7", "--ckpt-every", "3"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("selected") / "run"
    args = [
        "--model",
        "gan",
        "--augment",
        "diffaug",
        "--diffaug-translation",
        "0.25",
        "--diffaug-cutout",
        "0.25",
    ]
    assert main([*args, *RUN, "--max-steps", "6", "--output", str(run_dir)]) == 0
    resumed = ["--resume", "last", "--max-steps", "7", "--lr", "0.5", "--image-every", "7"]
    assert main([*resumed, "--output", str(run_dir)]) == 0
    return run_dir


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def logged(run_dir: Path, metric: str) -> dict[int, float]:
    with open(run_dir / "metrics.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get(metric)]
    steps = [int(row["step"]) for row in rows]
    assert len(steps) == len(set(steps)), f"{metric} logged twice at one step: {steps}"
    return {int(row["step"]): float(row[metric]) for row in rows}


def test_run_records_the_test_metrics_of_the_checkpoint_chosen_on_validation(run_dir: Path) -> None:
    summary = summary_of(run_dir)
    selected = summary["selected_checkpoint"]
    val_curve = logged(run_dir, "val/fd_classifier")
    assert sorted(val_curve) == [3, 6, 7]
    # Chosen among the validations during training, the last iteration's included, on the validation
    # headline alone.
    best_step = min((3, 6, 7), key=lambda step: val_curve[step])
    assert best_step != 7, "the wrecked last iteration is the worst"
    assert selected["path"] == str(run_dir / "checkpoints" / "best.ckpt")
    assert selected["chosen_on"] == summary["headline_metric"] == "val/fd_classifier"
    assert selected["step"] == best_step
    assert selected["val/fd_classifier"] == pytest.approx(val_curve[best_step])
    test_metrics = selected["test_metrics"]
    assert set(test_metrics) == {name for name in summary["final_metrics"] if name.startswith("test/")}
    assert test_metrics["test/fd_classifier"] != summary["final_metrics"]["test/fd_classifier"]
    # The run's own records stay the final weights': the test row at the last step (the one at 6 is the
    # first part's final evaluation).
    assert logged(run_dir, "test/fd_classifier")[7] == summary["final_metrics"]["test/fd_classifier"]
    assert summary["evaluation"]["test"]["n_fake"] == 50
    # The ratios given are what the run used and recorded.
    assert summary["augmentation"]["diffaug_translation"] == 0.25
    assert "diffaug_translation: 0.25\ndiffaug_cutout: 0.25" in (run_dir / "config.yaml").read_text()


def test_evaluate_of_the_chosen_checkpoint_reproduces_its_recorded_test_metrics(
    run_dir: Path, tmp_path: Path
) -> None:
    selected = summary_of(run_dir)["selected_checkpoint"]
    assert main(["--evaluate", selected["path"], "--output", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    for name, value in selected["test_metrics"].items():
        assert metrics[name] == pytest.approx(value, rel=1e-6), name


def chosen_stub(run_dir: Path, path: str | None = None):
    best = str(run_dir / "checkpoints" / "best.ckpt") if path is None else path
    return SimpleNamespace(
        monitor="val/fd_classifier", best_model_path=best, best_model_score=torch.tensor(12.5)
    )


def test_a_best_checkpoint_at_the_final_step_reuses_the_final_test_metrics(run_dir: Path) -> None:
    step = summary_of(run_dir)["selected_checkpoint"]["step"]
    model = SimpleNamespace(optimizer_steps_per_iteration=2, iteration=step)  # the GAN: D and G per iteration
    final = {"test/fd_classifier": 3.0, "val/fd_classifier": 4.0}
    # No trainer: nothing may be evaluated again.
    record = evaluate_selected_checkpoint(None, model, None, chosen_stub(run_dir), final)
    assert record["step"] == step and record["val/fd_classifier"] == 12.5
    assert record["test_metrics"] == {"test/fd_classifier": 3.0}
    assert "final weights" in record["note"] and "not recomputed" in record["note"]


def test_without_a_saved_best_checkpoint_nothing_is_evaluated(run_dir: Path) -> None:
    model = SimpleNamespace(optimizer_steps_per_iteration=2, iteration=7)
    record = evaluate_selected_checkpoint(None, model, None, chosen_stub(run_dir, path=""), {})
    assert record["path"] is None and "no validation ran during training" in record["note"]
    assert "test_metrics" not in record

"""Callbacks that cannot act for a run's model and data are left out of its Trainer; the run writes the same.

Lightning calls every callback at every hook (about seven per GAN iteration), so the pictures and metrics of
other families and data kinds cost every iteration without doing anything (callbacks/applicability.py).
"""

from pathlib import Path

import pytest
from pytorch_lightning.callbacks import Callback
from tiny import TINY_RUN, quick_series_scores

from lightning_genae.callbacks.applicability import ModelSpecificCallback, applicable
from lightning_genae.callbacks.grouping import members
from lightning_genae.experiment import train as train_module
from lightning_genae.experiment.cli import main
from lightning_genae.experiment.trainer import build_callbacks

MODEL_SPECIFIC = {
    "SampleGrid",
    "ReconstructionGrid",
    "InterpolationGrid",
    "DiscriminatorReconstructionGrid",
    "SaveNormaliser",
    "RepresentationMetrics",
    "DiscriminatorOverfitting",
    "AugmentationPreview",
}
TINY_RAE = "--model rae --data sines --rnn-hidden 8 --latent-dim 4 --batch-size 32".split()
TINY_RAE += "--eval-every 3 --image-every 3 --ckpt-every 3 --eval-samples 64".split()
AUGMENTER = ["--augmenter-width", "8", "--augmenter-latent-dim", "8", "--augmenter-steps", "5"]
# What each run keeps of the model-specific callbacks, by what its model offers and its data is.
RUNS = {
    # Samples, decodes noise and scores images; reconstructs nothing; no series, no normaliser.
    "gan": (
        [*TINY_RUN, "--model", "gan", "--eval-samples", "64"],
        {"SampleGrid", "InterpolationGrid", "DiscriminatorOverfitting"},
    ),
    # Reconstructs and encodes; does not sample; a data-side augmentation has a preview.
    "ae": (
        [*TINY_RUN, "--model", "ae", "--augment", "ae", *AUGMENTER],
        {"ReconstructionGrid", "InterpolationGrid", "RepresentationMetrics", "AugmentationPreview"},
    ),
    # A series autoencoder that also samples, on normalised series.
    "rae": (TINY_RAE, {"ReconstructionGrid", "SampleGrid", "SaveNormaliser", "RepresentationMetrics"}),
}


class RecordCallbacks(Callback):
    """Notes the class names of the callbacks the Trainer calls during fit, grouped ones included."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def on_train_start(self, trainer, pl_module) -> None:
        self.names = {type(callback).__name__ for callback in members(trainer.callbacks)}


def run_recording(args: list[str], out: Path, patch: pytest.MonkeyPatch) -> set[str]:
    recorder = RecordCallbacks()
    patch.setattr(train_module, "build_callbacks", lambda *a: [*build_callbacks(*a), recorder])
    assert main([*args, "--max-steps", "3", "--output", str(out)]) == 0
    return recorder.names


def written(run_dir: Path) -> dict[str, bytes | None]:
    """The run folder's files: contents of the deterministic ones, names of the rest (timed, or binary)."""
    deterministic = {"metrics.csv", "normaliser.json"}
    return {
        str(path.relative_to(run_dir)): path.read_bytes() if path.name in deterministic else None
        for path in sorted(run_dir.rglob("*"))
        if path.is_file()
    }


# Families also run with every callback kept, to compare what the two runs write.
COMPARED = ("gan", "rae")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, tuple[Path, set[str]]]]:
    """Per family: ("filtered": the run as run.py makes it; "all": every callback kept) -> (folder, names)."""
    root = tmp_path_factory.mktemp("applicability")
    made: dict[str, dict[str, tuple[Path, set[str]]]] = {}
    with pytest.MonkeyPatch.context() as patch:
        quick_series_scores(patch)
        patch.setattr("lightning_genae.experiment.augmenter.default_cache_dir", lambda: root / "augmenters")
        for family, (args, _) in RUNS.items():
            made[family] = {"filtered": (root / family, run_recording(args, root / family, patch))}
        patch.setattr(train_module, "applicable", lambda callbacks, *_: list(callbacks))
        for family in COMPARED:
            folder = root / f"{family}-all"
            made[family]["all"] = (folder, run_recording(RUNS[family][0], folder, patch))
    return made


@pytest.mark.slow
@pytest.mark.parametrize("family", RUNS)
def test_a_run_keeps_exactly_the_callbacks_its_model_and_data_can_use(family, runs):
    _, names = runs[family]["filtered"]
    assert names & MODEL_SPECIFIC == RUNS[family][1]
    # Everything that is not model-specific stays: checkpoints, the guard, the stop on signals.
    assert {"DivergenceGuard", "PeriodicLastCheckpoint", "StopOnSignal", "RandomStateInCheckpoints"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("family", COMPARED)
def test_leaving_them_out_changes_nothing_the_run_writes(family, runs):
    (filtered, _), (everything, names) = runs[family]["filtered"], runs[family]["all"]
    assert MODEL_SPECIFIC - {"AugmentationPreview"} <= names
    assert written(filtered) == written(everything)


def test_applicable_drops_only_model_specific_callbacks_that_do_not_apply():
    class Never(ModelSpecificCallback):
        def applies(self, pl_module, datamodule) -> bool:
            return False

    class Always(ModelSpecificCallback):
        def applies(self, pl_module, datamodule) -> bool:
            return True

    plain, never, always = Callback(), Never(), Always()
    assert applicable([never, plain, always, never], None, None) == [plain, always]

"""Long evaluation passes say where they are; quick ones say nothing.

Every pass is run here with its quiet period set to 0, so that it speaks however quick it is on this
machine, and once with the product's 10 s, where a pass of a moment must stay silent. (The rest of the
suite runs with the passes silent: see conftest.py.)
"""

from __future__ import annotations

import pytest
import torch
from test_console import FakeClock
from tiny import TINY_RUN

from lightning_genae import progress as console
from lightning_genae.experiment.cli import main
from lightning_genae.metrics import generative
from lightning_genae.metrics.generative import RealFeatures
from lightning_genae.metrics.sequences import score_sequences

pytestmark = pytest.mark.quick


def test_a_phase_quiet_for_a_while_says_nothing_when_it_ends_within_it(capsys):
    clock = FakeClock()
    progress = console.PhaseProgress("scoring", 4, "chunk", quiet_for=10.0, clock=clock)
    for _ in range(4):
        clock.now += 2.0
        progress.advance()
    assert capsys.readouterr().err == ""


def test_a_phase_quiet_for_a_while_speaks_once_it_outlasts_it_and_at_its_end(capsys):
    clock = FakeClock()
    progress = console.PhaseProgress("scoring", 10, "chunk", interval=10.0, quiet_for=10.0, clock=clock)
    for _ in range(10):
        clock.now += 4.0  # silent at 4 and 8 s; a line at 12 s (chunk 3), 24 s (6), 36 s (9) and the end
        progress.advance()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": chunk ")[1].split(",")[0] for line in lines] == ["3/10", "6/10", "9/10", "10/10"]
    assert "about 28.0 s left" in lines[0]


def test_the_post_hoc_fits_of_the_sequence_scores_show_their_steps(monkeypatch, capsys):
    monkeypatch.setattr(console, "EVALUATION_QUIET_SECONDS", 0.0)
    series = torch.rand(16, 6, 2)
    score_sequences(series, "test", generated=torch.rand(16, 6, 2), steps=3)
    err = capsys.readouterr().err
    assert "test: fitting the post-hoc GRUs of the discriminative and predictive scores: step 1/6" in err
    assert "step 6/6" in err


def test_quick_post_hoc_fits_say_nothing(monkeypatch, capsys):
    monkeypatch.setattr(console, "EVALUATION_QUIET_SECONDS", 10.0)
    score_sequences(torch.rand(16, 6, 2), "val", generated=torch.rand(16, 6, 2), steps=2)
    assert capsys.readouterr().err == ""


class PixelMeans(torch.nn.Module):
    """A backbone stand-in: per-image mean, counting the images it was given per call."""

    name, feature_dim, description = "pixel_means", 1, "pixel means (test)"
    chunk_size = 256

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(images))
        return images.float().flatten(1).mean(1, keepdim=True)


def test_a_splits_features_are_computed_in_blocks_with_progress_and_equal_the_whole(
    tmp_path, monkeypatch, capsys
):
    from lightning_genae.datamodules import build_datamodule

    monkeypatch.setattr(console, "EVALUATION_QUIET_SECONDS", 0.0)
    monkeypatch.setattr(generative, "REAL_FEATURE_BLOCK", 500)
    data = build_datamodule("digits", data_dir=".")
    data.setup("fit")
    backbone = PixelMeans()
    features = RealFeatures(backbone, tmp_path).get(data, "train", torch.device("cpu"))
    images, _ = data.split_tensors("train")
    assert backbone.calls == [500, 500, len(images) - 1000]
    assert torch.equal(features, images.float().flatten(1).mean(1, keepdim=True))
    err = capsys.readouterr().err
    assert f"features of the digits train split ({len(images)} images" in err
    assert f"image {len(images)}/{len(images)}" in err


def test_the_block_is_a_multiple_of_every_backbones_chunk():
    from lightning_genae.metrics import backbones

    chunks = {
        cls.chunk_size
        for cls in vars(backbones).values()
        if isinstance(cls, type) and issubclass(cls, backbones.FeatureBackbone)
    }
    assert all(generative.REAL_FEATURE_BLOCK % chunk == 0 for chunk in chunks)


@pytest.mark.slow
def test_a_run_in_a_log_file_shows_its_generated_samples_and_its_test_loop(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(console, "EVALUATION_QUIET_SECONDS", 0.0)
    args = ["--model", "gan", *TINY_RUN, "--max-steps", "3", "--eval-samples", "600"]
    assert main([*args, "--output", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "test: generating 359 samples and their classifier features: chunk of 500 1/1" in err
    assert "test: batch " in err


def test_evaluate_in_a_log_file_draws_no_bars(tmp_path, tiny_ae_run, capsys):
    # Lightning's own bars would write their redraws into the file; the run's bar writes lines there.
    checkpoint = tiny_ae_run / "checkpoints" / "last.ckpt"
    assert main(["--evaluate", str(checkpoint), "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "━" not in out and "it/s" not in out and "\r" not in out
    assert out.lstrip().startswith("metric")

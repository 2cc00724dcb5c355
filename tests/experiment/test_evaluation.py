"""Evaluation: metric names carry their backbone, numbers behave as the definitions say, and can be re-run."""

import json
import os
import shutil
import signal
import urllib.error
from pathlib import Path

import pytest
import torch
from PIL import Image

from lightning_genae.checkpoint import CONFIG_KEY
from lightning_genae.datamodules import build_datamodule
from lightning_genae.experiment.cli import main
from lightning_genae.metrics import names
from lightning_genae.metrics.backbones import load_backbone
from lightning_genae.metrics.distances import feature_metrics, frechet_distance
from lightning_genae.metrics.generative import (
    REAL_SUBSET_SEED,
    RealFeatures,
    extract_features,
    score_generated,
    seeded_subset,
)
from lightning_genae.metrics.names import GENERATIVE_KEYS, metric_name, try_parse

SMALL = [
    "--width",
    "8",
    "--latent-dim",
    "8",
    "--batch-size",
    "32",
    "--eval-every",
    "4",
    "--image-every",
    "4",
    "--eval-samples",
    "150",
]
# The same for `ae`, which scores reconstructions and so takes no --eval-samples.
SMALL_AE = SMALL[:-2]


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def first_table_row(output: str) -> str:
    """The metric named on the first row under the metrics table's header rule."""
    lines = output.splitlines()
    rule = next(index for index, line in enumerate(lines) if line.startswith("---"))
    return lines[rule + 1].split()[0]


def assert_named_in_the_vocabulary(metrics: dict) -> None:
    """Every name a run reports is one the ablation tables can label and sort (metrics/names.py)."""
    unknown = [name for name in metrics if try_parse(name) is None]
    assert not unknown, unknown


def test_gan_run_reports_generative_metrics_with_counts_and_keeps_the_best(tmp_path):
    run_dir = tmp_path / "gan"
    assert (
        main(["--model", "gan", "--data", "digits", *SMALL, "--max-steps", "8", "--output", str(run_dir)])
        == 0
    )
    summary = summary_of(run_dir)
    for stage in ("val", "test"):
        for key in ("fd", "kid", "kid_std", "precision", "recall", "density", "coverage"):
            assert f"{stage}/{key}_classifier" in summary["final_metrics"], (stage, key)
    # digits: 180 validation and 359 test images cap the requested 150 only where they are fewer.
    assert summary["evaluation"]["val"]["n_real"] == summary["evaluation"]["val"]["n_fake"] == 150
    assert summary["evaluation"]["test"]["split"] == "test"
    assert "classifier (digits" in summary["evaluation"]["test"]["backbone"]
    assert summary["headline_metric"] == "val/fd_classifier"
    assert_named_in_the_vocabulary(summary["final_metrics"])
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert list((run_dir / "images").glob("interpolations_step*.png"))
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert any(",4.0," in row or row.endswith(",4") or ",4," in row for row in rows[1:])


def test_autoencoder_reports_psnr_ssim_probe_and_pca_baseline(tmp_path):
    run_dir = tmp_path / "ae"
    assert (
        main(["--model", "ae", "--data", "digits", *SMALL_AE, "--max-steps", "30", "--output", str(run_dir)])
        == 0
    )
    metrics = summary_of(run_dir)["final_metrics"]
    for key in ("test/psnr", "test/ssim", "test/probe_acc", "test/pca_probe_acc", "test/pca_mse", "val/psnr"):
        assert key in metrics, key
    assert 0 < metrics["test/ssim"] <= 1 and metrics["test/psnr"] > 5
    assert 0.1 < metrics["test/probe_acc"] <= 1, "a probe on 8-d codes of digits beats chance"
    assert metrics["test/pca_probe_acc"] > 0.7, "PCA with 8 components separates digits well"
    assert_named_in_the_vocabulary(metrics)


@pytest.mark.quick
@pytest.mark.slow
@pytest.mark.parametrize("model", ["gan", "vae"])
def test_evaluate_reproduces_the_runs_final_metrics(model, tmp_path, capsys):
    run_dir = tmp_path / model
    assert (
        main(["--model", model, "--data", "digits", *SMALL, "--max-steps", "6", "--output", str(run_dir)])
        == 0
    )
    assert (
        main(["--evaluate", str(run_dir / "checkpoints" / "last.ckpt"), "--output", str(tmp_path / "eval")])
        == 0
    )
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    final = summary_of(run_dir)["final_metrics"]
    headline = names.test_headline(summary_of(run_dir)["headline_metric"], final)
    assert headline is not None and first_table_row(capsys.readouterr().out) == headline
    compared = [key for key in final if key.startswith(("val/", "test/"))]
    assert len(compared) > 8
    assert_named_in_the_vocabulary(final)
    for key in compared:
        assert evaluated["metrics"][key] == pytest.approx(final[key], rel=1e-5, abs=1e-7), key
    assert evaluated["global_step"] == 6 and evaluated["evaluation"] == summary_of(run_dir)["evaluation"]


def test_evaluate_rejects_options_that_would_change_the_model(tmp_path, capsys):
    run_dir = tmp_path / "ae"
    assert (
        main(["--model", "ae", "--data", "digits", *SMALL_AE, "--max-steps", "2", "--output", str(run_dir)])
        == 0
    )
    assert main(["--evaluate", str(run_dir / "checkpoints" / "last.ckpt"), "--latent-dim", "4"]) == 2
    assert "--latent-dim" in capsys.readouterr().err


def test_evaluate_takes_a_batch_larger_than_the_training_split(tiny_ae_run, tmp_path):
    """Evaluation reads the validation and test splits only: training's full-batch rule does not bind it."""
    checkpoint = str(tiny_ae_run / "checkpoints" / "last.ckpt")
    assert main(["--evaluate", checkpoint, "--batch-size", "2000", "--output", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "eval.json").is_file()


def test_an_evaluation_runs_at_the_threads_it_is_given(tiny_ae_run, tmp_path):
    """--threads is one invocation's: the run's own (recorded nowhere) does not bind its evaluation."""
    checkpoint = str(tiny_ae_run / "checkpoints" / "last.ckpt")
    assert main(["--evaluate", checkpoint, "--threads", "2", "--output", str(tmp_path / "eval")]) == 0
    assert torch.get_num_threads() == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_evaluating_a_gpu_trained_run_without_a_gpu_names_the_accelerator_flag(tiny_ae_run, tmp_path, capsys):
    """A run trained on a cluster's GPU and scored on a laptop: one line, not Lightning's traceback."""
    contents = torch.load(tiny_ae_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    contents[CONFIG_KEY] = {**contents[CONFIG_KEY], "accelerator": "gpu"}
    run_dir = tmp_path / "gpu-run"
    shutil.copytree(tiny_ae_run, run_dir)
    torch.save(contents, run_dir / "checkpoints" / "last.ckpt")
    before = sorted(path.name for path in run_dir.rglob("*"))
    assert main(["--evaluate", str(run_dir / "checkpoints" / "last.ckpt")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "--accelerator gpu" in error and "--accelerator cpu" in error, error
    assert sorted(path.name for path in run_dir.rglob("*")) == before
    # The flag it names scores the run.
    assert main(["--evaluate", str(run_dir / "checkpoints" / "last.ckpt"), "--accelerator", "cpu"]) == 0
    assert (run_dir / "eval.json").is_file()


def test_evaluate_never_replaces_an_earlier_evaluation_or_writes_among_another_runs_files(
    tiny_ae_run, tmp_path, capsys
):
    checkpoint = str(tiny_ae_run / "checkpoints" / "last.ckpt")
    out = tmp_path / "eval"
    assert main(["--evaluate", checkpoint, "--batch-size", "60", "--output", str(out)]) == 0
    first = (out / "eval.json").read_bytes()
    capsys.readouterr()
    # Another evaluation (other settings, another checkpoint) would silently take the earlier one's place.
    assert main(["--evaluate", checkpoint, "--batch-size", "80", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds an earlier evaluation" in err and "--overwrite" in err and err.count("\n") == 1
    assert (out / "eval.json").read_bytes() == first
    first_inode = (out / "eval.json").stat().st_ino
    assert main(["--evaluate", checkpoint, "--batch-size", "80", "--output", str(out), "--overwrite"]) == 0
    assert (out / "eval.json").stat().st_ino != first_inode, "replaced, as --overwrite asks"
    # A folder holding a run of its own is not this evaluation's.
    other_run = tmp_path / "other"
    shutil.copytree(tiny_ae_run, other_run)
    (other_run / "eval.json").unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["--evaluate", checkpoint, "--output", str(other_run)]) == 2
    assert "holds a run" in capsys.readouterr().err and not (other_run / "eval.json").exists()
    # A user's eval.json (no evaluation wrote it) stays, --overwrite or not; so does a folder of that name.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "eval.json").write_text('{"mine": "precious"}\n')
    assert main(["--evaluate", checkpoint, "--output", str(mine), "--overwrite"]) == 2
    assert "a file no evaluation wrote" in capsys.readouterr().err
    assert (mine / "eval.json").read_text() == '{"mine": "precious"}\n'
    (mine / "eval.json").unlink()
    (mine / "eval.json").mkdir()
    assert main(["--evaluate", checkpoint, "--output", str(mine), "--overwrite"]) == 2
    assert "a file no evaluation wrote" in capsys.readouterr().err


def _write_pngs(images: torch.Tensor, folder: Path) -> None:
    folder.mkdir(parents=True)
    for index, image in enumerate(images):
        Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{index:04d}.png")


def test_evaluate_folder_scores_real_images_far_better_than_noise(tmp_path, capsys):
    datamodule = build_datamodule("digits", data_dir=tmp_path)
    datamodule.setup()
    train_images, _ = datamodule.split_tensors("train")
    _write_pngs(train_images[:300], tmp_path / "real")
    noise = torch.randint(
        0, 256, (300, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    _write_pngs(noise, tmp_path / "noise")
    scores = {}
    for name in ("real", "noise"):
        out = tmp_path / f"eval-{name}"
        assert (
            main(["--evaluate-folder", str(tmp_path / name), "--data", "digits", "--output", str(out)]) == 0
        )
        scores[name] = json.loads((out / "eval.json").read_text())
        printed = capsys.readouterr().out
        assert first_table_row(printed) == "fd_classifier"
        assert "classifier: 300 generated vs 300 real test images, classifier (" in printed
    real, noise_result = scores["real"]["metrics"], scores["noise"]["metrics"]
    assert real["fd_classifier"] * 10 < noise_result["fd_classifier"]
    assert real["precision_classifier"] > 0.5 > noise_result["precision_classifier"]
    assert scores["real"]["backbones"]["classifier"]["n_real"] == 300
    assert "inception" in scores["real"]["skipped"] or "fid_inception" in real
    assert scores["real"]["folder"] == str(tmp_path / "real"), "absolute, as config.yaml's paths"
    # A folder of a few images is scored, with a word on what so few can say.
    _write_pngs(train_images[:8], tmp_path / "few")
    args = ["--evaluate-folder", str(tmp_path / "few"), "--data", "digits", "--backbone", "classifier"]
    assert main([*args, "--output", str(tmp_path / "eval-few")]) == 0
    assert "8 generated vs 8 real test images" in (printed := capsys.readouterr().out)
    assert "at so few images FD is biased upward" in printed


def test_evaluate_folder_with_a_backbone_scores_with_it_alone_and_says_how_many_images_it_scored(
    tmp_path, capsys
):
    folder = tmp_path / "rgb"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for index in range(8):
        pixels = torch.randint(0, 256, (30, 40, 3), dtype=torch.uint8, generator=generator)
        Image.fromarray(pixels.numpy(), mode="RGB").save(folder / f"{index}.png")
    out = tmp_path / "eval"
    args = ["--evaluate-folder", str(folder), "--data", "digits", "--backbone", "classifier"]
    assert main([*args, "--eval-samples", "6", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    # Fewer are scored than the folder holds, and the line says why.
    assert (
        "classifier: 6 generated vs 6 real test images, classifier (" in printed
        and "; a seeded 6 of the folder's 8 images, as both sides take min(--eval-samples 6, the test "
        "split's 359, the folder's)"
        in printed
    )
    result = json.loads((out / "eval.json").read_text())
    assert list(result["backbones"]) == ["classifier"] and result["skipped"] == {}
    assert result["n_images"] == 8 and result["backbones"]["classifier"]["n_fake"] == 6


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def test_inception_without_weights_is_one_clear_line_before_training(tmp_path, offline, capsys):
    run_dir = tmp_path / "gan"
    args = ["--model", "gan", "--data", "digits", *SMALL, "--backbone", "inception", "--max-steps", "2"]
    assert main([*args, "--output", str(run_dir)]) == 2
    out, err = capsys.readouterr()
    *announced, error = err.strip().splitlines()
    assert error.startswith("error: inception: ") and "inception_weights" in error
    assert all(line.startswith("inception: downloading ") for line in announced)
    assert "Traceback" not in out + err and "Epoch" not in out + err
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "summary.json").exists()


def test_a_run_scored_with_inception_is_evaluated_without_its_weights_with_the_classifier(
    tmp_path, offline, monkeypatch, capsys
):
    run_dir = tmp_path / "gan"
    args = ["--model", "gan", "--data", "digits", *SMALL, "--backbone", "inception", "--max-steps", "2"]
    # Trained where its weights were at hand: here, without image metrics (--evaluate below looks for the
    # weights as it would anywhere).
    with monkeypatch.context() as patched:
        patched.setattr("lightning_genae.api.generative_metrics", lambda *args: None)
        assert main([*args, "--output", str(run_dir)]) == 0
    capsys.readouterr()
    checkpoint = str(run_dir / "checkpoints" / "last.ckpt")
    assert main(["--evaluate", checkpoint]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: inception: ") and "inception_weights" in error
    assert not (run_dir / "eval.json").exists()
    assert main(["--evaluate", checkpoint, "--backbone", "classifier"]) == 0
    assert "test/fd_classifier" in json.loads((run_dir / "eval.json").read_text())["metrics"]


def unlabelled_images(folder: Path) -> Path:
    """24 grey 16 px PNGs in one folder: images `--data folder` reads without labels."""
    folder.mkdir()
    for index in range(24):
        Image.new("L", (16, 16), color=10 * index).save(folder / f"{index}.png")
    return folder


def test_a_run_and_its_evaluation_record_why_the_image_metrics_were_left_out(tmp_path, capsys):
    images = unlabelled_images(tmp_path / "images")
    run_dir = tmp_path / "run"
    args = ["--model", "gan", "--data", "folder", "--data-dir", str(images), *SMALL, "--batch-size", "4"]
    assert main([*args, "--max-steps", "2", "--output", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    why = summary["skipped"]["classifier"]
    assert why.startswith("classifier: folder has no labels")
    assert f"generative metrics skipped: {why}" in printed
    assert not any(name.endswith("_classifier") for name in summary["final_metrics"])
    assert main(["--evaluate", str(run_dir / "checkpoints" / "last.ckpt")]) == 0
    assert json.loads((run_dir / "eval.json").read_text())["skipped"] == {"classifier": why}


def test_a_grid_on_images_without_labels_for_its_classifier_is_refused_before_any_cell(tmp_path, capsys):
    images = unlabelled_images(tmp_path / "images")
    root = tmp_path / "grid"
    args = ["--model", "gan", "--data", "folder", "--data-dir", str(images), *SMALL, "--batch-size", "4"]
    grid = [*args, "--max-steps", "1", "--seeds", "0,1", "--output", str(root)]
    assert main(grid) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: classifier: folder has no labels to train a feature classifier on"), error
    assert "backbone inception" in error and "\n" not in error, error
    assert not root.exists(), "no grid.json, no cell folder"


def test_a_tuning_grid_of_a_family_scored_on_images_without_labels_is_refused_first(tmp_path, capsys):
    # A plain AAE grid still trains there (its runs report the reconstruction error); a tuning grid could
    # not choose a candidate: the AAE's headline is an image metric, which needs the classifier's labels.
    images = unlabelled_images(tmp_path / "images")
    root = tmp_path / "grid"
    args = ["--model", "aae", "--data", "folder", "--data-dir", str(images), *SMALL, "--batch-size", "4"]
    tuning = ["--augment", "none,ae", "--augment-p", "0.25,0.5", "--tune-seeds", "100", "--seeds", "0"]
    assert main([*args, "--max-steps", "1", *tuning, "--output", str(root)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: classifier: folder has no labels to train a feature classifier on;")
    assert error.endswith("(a tuning grid chooses each arm's candidate on the validation image metrics)")
    assert not root.exists(), "no grid.json, no cell folder"


def test_real_features_are_cached_on_disk(tmp_path):
    datamodule = build_datamodule("digits", data_dir=tmp_path)
    datamodule.setup()
    backbone = load_backbone("classifier", "digits", datamodule)
    first = RealFeatures(backbone, tmp_path / "c").get(datamodule, "test", torch.device("cpu"))
    cached = list((tmp_path / "c" / "features").glob("digits-test-classifier-*.pt"))
    assert len(cached) == 1
    again = RealFeatures(backbone, tmp_path / "c").get(datamodule, "test", torch.device("cpu"))
    assert torch.equal(first, again)


def test_a_comparison_of_n_computes_the_features_of_those_n_real_images_only(tmp_path):
    from test_evaluation_progress import PixelMeans

    datamodule = build_datamodule("digits", data_dir=tmp_path)
    datamodule.setup()
    images, _ = datamodule.split_tensors("train")
    cpu = torch.device("cpu")
    backbone = PixelMeans()
    reals = RealFeatures(backbone, tmp_path / "c")

    def expected(n: int) -> torch.Tensor:
        chosen = images[seeded_subset(len(images), n, REAL_SUBSET_SEED)]
        return chosen.float().flatten(1).mean(1, keepdim=True)

    backbone.chunk_size = 64  # computed in whole chunks, so that the same chunks give the same features
    assert torch.equal(reals.reference(datamodule, "train", 100, cpu), expected(100))
    assert backbone.calls == [128], "only the 100 compared, to a whole number of chunks"
    assert torch.equal(reals.reference(datamodule, "train", 40, cpu), expected(40))
    assert backbone.calls == [128], "a smaller N is among the larger one's images"
    assert torch.equal(reals.reference(datamodule, "train", 300, cpu), expected(300))
    assert backbone.calls == [128, 192], "a larger N computes only the chunks it adds"
    fresh = PixelMeans()
    from_disk = RealFeatures(fresh, tmp_path / "c").reference(datamodule, "train", 250, cpu)
    assert torch.equal(from_disk, expected(250))
    assert fresh.calls == [], "read from the disk"
    whole = RealFeatures(fresh, tmp_path / "c").get(datamodule, "train", cpu)
    assert sum(fresh.calls) == len(images) - 320
    assert torch.equal(whole, images.float().flatten(1).mean(1, keepdim=True)), "the split's order"
    assert len(list((tmp_path / "c" / "features").glob("*.pt"))) == 1


def test_the_real_features_of_n_images_do_not_depend_on_the_sizes_asked_before(tmp_path):
    # A network's output can depend on the batch it was computed in (float rounding); computed in whole
    # chunks of the reference order, each chunk holds the same images whatever was asked before.
    class ChunkSensitive(torch.nn.Module):
        chunk_size, name = 64, "sensitive"

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            values = images.float().flatten(1).mean(1, keepdim=True)
            chunks = values.split(self.chunk_size)
            return torch.cat([chunk + 1e-3 * chunk.mean() for chunk in chunks])

    datamodule = build_datamodule("digits", data_dir=tmp_path)
    datamodule.setup()
    cpu = torch.device("cpu")
    stepwise = RealFeatures(ChunkSensitive(), tmp_path / "a")
    stepwise.reference(datamodule, "train", 13, cpu)
    stepwise.reference(datamodule, "train", 100, cpu)
    at_once = RealFeatures(ChunkSensitive(), tmp_path / "b").reference(datamodule, "train", 300, cpu)
    assert torch.equal(stepwise.reference(datamodule, "train", 300, cpu), at_once)


def test_score_generated_compares_n_seeded_reals_of_the_split_with_n_fakes_and_names_them(tmp_path):
    datamodule = build_datamodule("digits", data_dir=tmp_path)
    datamodule.setup()
    backbone = load_backbone("classifier", "digits", datamodule)
    cpu = torch.device("cpu")
    reals = RealFeatures(backbone, tmp_path / "c")
    train_images, _ = datamodule.split_tensors("train")
    asked = []

    def fakes(n: int) -> torch.Tensor:
        asked.append(n)
        return extract_features(backbone, train_images[:n], cpu)

    score = score_generated(reals, datamodule, "val", fakes, num_samples=100, device=cpu)
    assert asked == [100], "the fakes are asked for exactly the N that is compared"
    assert score.record() == {"split": "val", "n_real": 100, "n_fake": 100, "backbone": backbone.description}
    assert list(score.values) == [metric_name(key, "classifier") for key in GENERATIVE_KEYS]
    assert list(score.logged()) == [f"val/{name}" for name in score.values]
    real_all = reals.get(datamodule, "val", cpu)
    expected = feature_metrics(real_all[seeded_subset(len(real_all), 100, REAL_SUBSET_SEED)], fakes(100))
    assert score.values["fd_classifier"] == expected["fd"]
    assert score.values["coverage_classifier"] == expected["coverage"]
    # digits has 180 validation images: asking for more compares all of them with as many fakes.
    capped = score_generated(reals, datamodule, "val", fakes, num_samples=10_000, device=cpu)
    assert (capped.n_real, capped.n_fake, asked[-1]) == (180, 180, 180)


@pytest.fixture(scope="module")
def mnist_test_features(mnist_data_dir):
    """The classifier backbone, MNIST's test images, and their features (extracted once for the module)."""
    datamodule = build_datamodule("mnist", data_dir=mnist_data_dir)
    datamodule.setup()
    images, _ = datamodule.split_tensors("test")
    backbone = load_backbone("classifier", "mnist", datamodule)
    return backbone, images, extract_features(backbone, images, torch.device("cpu"))


@pytest.mark.slow
def test_two_halves_of_mnist_test_split_are_close(mnist_test_features):
    backbone, images, features = mnist_test_features
    half = len(features) // 2
    same_distribution = frechet_distance(features[:half], features[half:])
    blurred = extract_features(backbone, _blur(images[half:], 2.0), torch.device("cpu"))
    assert same_distribution < 0.1 * frechet_distance(features[:half], blurred)


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    if sigma == 0:
        return images
    size = int(2 * round(3 * sigma) + 1)
    return gaussian_blur(images.float(), [size, size], [sigma, sigma]).round().clamp(0, 255).to(torch.uint8)


def _noisy(images: torch.Tensor, std: float) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0)) * std
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


@pytest.mark.slow
def test_fd_rises_monotonically_with_blur_and_with_noise_on_real_mnist(mnist_test_features):
    backbone, images, features = mnist_test_features
    real, probe = features[:2000], images[5000:7000]
    # Level 0 is the probe itself, whose features are the split's.
    uncorrupted = frechet_distance(real, features[5000:7000])
    for corrupt, levels in ((_blur, [0.5, 1.0, 2.0]), (_noisy, [32.0, 64.0, 128.0])):
        distances = [uncorrupted] + [
            frechet_distance(real, extract_features(backbone, corrupt(probe, level), torch.device("cpu")))
            for level in levels
        ]
        assert distances == sorted(distances) and distances[-1] > 5 * distances[0], (
            corrupt.__name__,
            distances,
        )


def test_evaluate_looks_up_the_image_metrics_where_training_does():
    # A name bound at import would keep whatever trainer.generative_metrics was then: a stub patched in by
    # one test would score every later --evaluate in the same process.
    import lightning_genae.experiment.evaluate as evaluate

    assert not hasattr(evaluate, "generative_metrics")


def test_evaluate_folder_of_a_missing_folder_says_it_is_not_one(tmp_path, capsys):
    missing, out = tmp_path / "no-such-folder", tmp_path / "out"
    assert main(["--evaluate-folder", str(missing), "--data", "digits", "--output", str(out)]) == 2
    assert f"{missing} is a file or does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_folder_against_a_test_split_too_small_to_score_is_one_line(tmp_path, capsys):
    data = tmp_path / "small"
    for index in range(20):
        image = torch.full((1, 1, 16, 16), 12 * index, dtype=torch.uint8)
        _write_pngs(image, data / ("a" if index % 2 else "b") / str(index))
    generated = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8)
    _write_pngs(generated, tmp_path / "generated")
    args = ["--evaluate-folder", str(tmp_path / "generated"), "--data", "folder", "--data-dir", str(data)]
    assert main([*args, "--image-size", "16", "--channels", "1", "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert (
        "the test split of folder, which holds 2 images, is too small" in error and "Traceback" not in error
    )


def test_evaluate_folder_names_an_image_too_large_to_open_in_one_line(tmp_path, capsys):
    import struct
    import zlib

    _write_pngs(torch.randint(0, 256, (7, 1, 16, 16), dtype=torch.uint8), tmp_path / "generated")
    # A PNG whose header claims 20,000 x 20,000 pixels, beyond PIL's guard against decompression bombs.
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + header
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    (tmp_path / "generated" / "huge.png").write_bytes(bomb + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    args = [
        "--evaluate-folder",
        str(tmp_path / "generated"),
        "--data",
        "digits",
        "--output",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "huge.png cannot be read as an image" in error and "Traceback" not in error


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_during_an_evaluation_is_one_line_and_exit_128_plus_the_signal(
    tiny_ae_run, tmp_path, monkeypatch, capsys, signum
):
    """Sent inside the Trainer's validation, where Lightning would turn Ctrl-C into exit 1 and SIGTERM would
    end the process without a word."""
    import pytorch_lightning as pl

    import lightning_genae.experiment.evaluate

    class SignalAtValidation(pl.Callback):
        def on_validation_start(self, trainer, pl_module):
            os.kill(os.getpid(), signum)

    final_evaluation = lightning_genae.experiment.evaluate.final_evaluation

    def with_a_signal(trainer, *args, **kwargs):
        trainer.callbacks.append(SignalAtValidation())
        return final_evaluation(trainer, *args, **kwargs)

    monkeypatch.setattr(lightning_genae.experiment.evaluate, "final_evaluation", with_a_signal)
    checkpoint = tiny_ae_run / "checkpoints" / "last.ckpt"
    assert main(["--evaluate", str(checkpoint), "--output", str(tmp_path / "eval")]) == 128 + signum
    name = signal.Signals(signum).name
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"stopped by {name} during the evaluation; no eval.json was written; run the command again"
    assert not (tmp_path / "eval" / "eval.json").exists()

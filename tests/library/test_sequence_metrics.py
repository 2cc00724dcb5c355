"""Sequence metrics: TimeGAN's discriminative and predictive scores rank real-like above noise and are
seeded; the shipped smnist classifier is what its manifest says; the callback logs vocabulary names."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_genae.cache import file_sha256
from lightning_genae.callbacks.sequence_metrics import (
    SequenceMetrics,
    build_sequence_metrics,
)
from lightning_genae.metrics import classifier as classifier_lib
from lightning_genae.metrics import sequence_classifier as seq_lib
from lightning_genae.metrics.names import Direction, direction
from lightning_genae.metrics.sequences import (
    DEFAULT_STEPS,
    discriminative_score,
    predictive_score,
    score_sequences,
)

pytestmark = pytest.mark.quick

# Small enough for the whole file to take seconds on one core, large enough for a clear separation.
FAST = {"steps": 60, "batch_size": 64}


def sines(n: int, seed: int, steps: int = 16, channels: int = 2) -> Tensor:
    """One synthetic process: random frequency, phase and amplitude per channel, a little noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(steps, dtype=torch.float32)[None, :, None]
    frequency = 0.1 + 0.3 * torch.rand(n, 1, channels, generator=g)
    phase = 2 * math.pi * torch.rand(n, 1, channels, generator=g)
    amplitude = 0.5 + 0.5 * torch.rand(n, 1, channels, generator=g)
    return amplitude * torch.sin(frequency * t + phase) + 0.05 * torch.randn(n, steps, channels, generator=g)


@pytest.fixture(scope="module")
def real() -> Tensor:
    return sines(500, seed=0)


@pytest.fixture(scope="module")
def real_like() -> Tensor:
    return sines(500, seed=1)


@pytest.fixture(scope="module")
def noise() -> Tensor:
    return 0.7 * torch.randn(500, 16, 2, generator=torch.Generator().manual_seed(2))


# ----- discriminative and predictive scores -----


def test_discriminative_score_is_near_zero_for_two_samples_of_the_same_process(real, real_like):
    assert discriminative_score(real, real_like, seed=0, **FAST) < 0.1


def test_discriminative_score_is_large_for_real_against_noise(real, noise):
    assert discriminative_score(real, noise, seed=0, **FAST) >= 0.3


def test_predictive_score_is_lower_when_trained_on_the_real_process_than_on_noise(real, real_like, noise):
    trained_on_real = predictive_score(real_like, real, seed=0, **FAST)
    trained_on_noise = predictive_score(noise, real, seed=0, **FAST)
    assert trained_on_real < 0.5 * trained_on_noise


def test_scores_are_deterministic_given_the_seed_and_leave_the_global_stream_alone(real, noise):
    state = torch.get_rng_state()
    first = (
        discriminative_score(real, noise, seed=3, steps=5),
        predictive_score(noise, real, seed=3, steps=5),
    )
    assert torch.equal(torch.get_rng_state(), state)
    again = (
        discriminative_score(real, noise, seed=3, steps=5),
        predictive_score(noise, real, seed=3, steps=5),
    )
    assert first == again
    assert predictive_score(noise, real, seed=4, steps=5) != first[1]


def test_scores_work_under_inference_mode_as_in_a_lightning_evaluation_hook(real, noise):
    with torch.inference_mode():
        inside = (
            discriminative_score(real, noise, seed=0, steps=5),
            predictive_score(noise, real, seed=0, steps=5),
        )
    assert inside == (
        discriminative_score(real, noise, seed=0, steps=5),
        predictive_score(noise, real, seed=0, steps=5),
    )


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda x: discriminative_score(x[:1], x[:1], steps=1), "at least 2 series"),
        (lambda x: predictive_score(x * float("nan"), x, steps=1), "NaN or Inf"),
    ],
)
def test_bad_input_is_a_one_line_value_error(real, call, says):
    with pytest.raises(ValueError) as raised:
        call(real)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_discriminative_score_of_the_smallest_split_a_series_dataset_allows(real, noise):
    # A split of 2 series (the least the series datamodules accept): one to train on, one to test on.
    assert discriminative_score(real[:2], noise[:2], steps=1) in (0.0, 0.5)


def train_range(series: Tensor) -> Tensor:
    return torch.stack([series.amin(dim=(0, 1)), series.amax(dim=(0, 1))])


def test_score_sequences_names_every_value_from_the_vocabulary(real, noise):
    score = score_sequences(real[:64], "val", generated=noise[:64], steps=2)
    assert set(score.logged()) == {"val/discriminative_quick", "val/predictive_quick"}
    assert all(direction(name) is Direction.LOWER for name in score.logged())
    assert score.record() == {"split": "val", "n_real": 64, "n_fake": 64, "backbone": None}
    # Fitted twice, given the training range and training series: the spreads, the out-of-range shares and
    # the wide discriminator join them; the spreads and the floors are read beside a score, not ranked.
    score = score_sequences(
        real[:64], "val", generated=noise[:64], steps=2, fits=2, train_range=train_range(real),
        train_series=real[64:128],
    )  # fmt: skip
    assert {name: direction(name) for name in score.logged()} == {
        "val/discriminative_quick": Direction.LOWER,
        "val/discriminative_quick_std": Direction.NONE,
        "val/predictive_quick": Direction.LOWER,
        "val/predictive_quick_std": Direction.NONE,
        "val/out_of_range": Direction.LOWER,
        "val/out_of_range_real": Direction.NONE,
        "val/discriminative_wide": Direction.LOWER,
        "val/discriminative_wide_real": Direction.NONE,
    }


def test_the_wide_discriminator_tells_noise_from_real_and_real_from_real_scores_its_floor(
    real, real_like, noise
):
    score = score_sequences(real[:200], "test", generated=noise[:200], steps=60, train_series=real_like[:200])
    assert score.values["discriminative_wide"] > 0.4 and score.values["discriminative_wide_real"] < 0.1


def test_each_score_is_the_mean_of_its_fits_with_their_spread_beside_it(real, noise):
    fits = [discriminative_score(real[:64], noise[:64], seed=seed, steps=3) for seed in (5, 6, 7)]
    score = score_sequences(real[:64], "val", generated=noise[:64], steps=3, seed=5, fits=3).values
    assert score["discriminative_quick"] == pytest.approx(sum(fits) / 3)
    assert score["discriminative_quick_std"] == pytest.approx(float(torch.tensor(fits).std(unbiased=False)))
    # One fit is the score as it always was: the first fit's seed is the score's.
    once = score_sequences(real[:64], "val", generated=noise[:64], steps=3, seed=5).values
    assert once["discriminative_quick"] == fits[0] and "discriminative_quick_std" not in once


@pytest.mark.parametrize(("shifted", "share"), [(0, 0.0), (16, 0.25), (64, 1.0)])
def test_series_outside_the_training_range_are_counted_and_real_ones_give_the_floor(real, shifted, share):
    """Scored against their own range, real series are all inside it; series moved past its top by the
    range's width are all outside, however well a post-hoc GRU is fooled."""
    bounds = train_range(real)
    generated = real[:64].clone()
    generated[:shifted] += bounds[1] - bounds[0]
    score = score_sequences(real[:64], "test", generated=generated, steps=1, train_range=bounds).values
    assert score["out_of_range"] == share and score["out_of_range_real"] == 0.0


# ----- the shipped smnist classifier -----


def test_shipped_smnist_classifier_matches_its_manifest():
    entry = classifier_lib.load_manifest(manifest_name=seq_lib.MANIFEST_NAME)["smnist"]
    path = classifier_lib.WEIGHTS_DIR / entry["file"]
    assert path.is_file() and path.stat().st_size < 300 * 1024
    assert file_sha256(path) == entry["sha256"]
    assert entry["test_accuracy"] >= 0.97 and entry["num_test"] == 10_000
    assert entry["command"].startswith("python -m lightning_genae.experiment.classifier --data smnist ")
    features = seq_lib.shipped_sequence_features("smnist")
    assert features is not None and features.name == "classifier"
    assert features(torch.zeros(3, 28, 28)).shape == (3, entry["feature_dim"])
    assert seq_lib.shipped_sequence_features("sines") is None


def test_shipped_smnist_classifier_reaches_its_stated_accuracy(mnist_data_dir):
    entry = classifier_lib.load_manifest(manifest_name=seq_lib.MANIFEST_NAME)["smnist"]
    model, _ = classifier_lib.load_checkpoint(
        classifier_lib.WEIGHTS_DIR / entry["file"], seq_lib.SequenceClassifier
    )
    series, labels = seq_lib.smnist_splits(mnist_data_dir)["test"]
    # 1000 rows-sequences: a standard error of ~0.5 points at 98%, so 2 points is a safe margin.
    assert classifier_lib.accuracy(model, series[:1000], labels[:1000]) >= entry["test_accuracy"] - 0.02


def test_a_modified_shipped_classifier_is_refused(tmp_path, monkeypatch):
    shipped = classifier_lib.WEIGHTS_DIR
    entry = classifier_lib.load_manifest(manifest_name=seq_lib.MANIFEST_NAME)["smnist"]
    (tmp_path / entry["file"]).write_bytes((shipped / entry["file"]).read_bytes() + b"x")
    (tmp_path / seq_lib.MANIFEST_NAME).write_text((shipped / seq_lib.MANIFEST_NAME).read_text())
    monkeypatch.setattr(classifier_lib, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(classifier_lib.BackboneUnavailable, match="is not the manifest's"):
        seq_lib.shipped_sequence_features("smnist")


# ----- the callback -----


class TinySeries(pl.LightningDataModule):
    """An in-memory sequence DataModule with the contract's batches: (series [B, T, C], labels [B])."""

    data_kind = "sequence"

    def __init__(self, name: str = "tiny", steps: int = 16, channels: int = 2, n: int = 96) -> None:
        super().__init__()
        self.name = name
        self.series = {
            split: sines(n, seed, steps, channels).clamp(-1, 1)
            for seed, split in enumerate(("train", "val", "test"))
        }

    def split_tensors(self, split: str) -> tuple[Tensor, Tensor]:
        return self.series[split], torch.full((len(self.series[split]),), -1)

    # How the framework's DataModules give a split without holding it.
    def split_size(self, split: str) -> int:
        return len(self.series[split])

    def split_batches(self, split: str):
        yield self.split_tensors(split)

    def items_at(self, split: str, indices: Tensor) -> tuple[Tensor, Tensor]:
        series, labels = self.split_tensors(split)
        return series[indices], labels[indices]

    def to_model_range(self, series: Tensor) -> Tensor:
        return series

    def _loader(self, split: str) -> DataLoader:
        series = self.series[split]
        return DataLoader(TensorDataset(series, torch.full((len(series),), -1)), batch_size=32)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class TinySequenceModel(pl.LightningModule):
    """An Autoencoder and Sampler of series: a code from the time average, decoded as a constant series."""

    def __init__(self, steps: int, channels: int, latent_dim: int = 4) -> None:
        super().__init__()
        self.steps = steps
        self.latent_dim = latent_dim
        self.encoder = nn.Linear(channels, latent_dim)
        self.decoder = nn.Linear(latent_dim, channels)

    def encode(self, series: Tensor) -> Tensor:
        return self.encoder(series.mean(dim=1))

    def decode(self, latents: Tensor) -> Tensor:
        return self.decoder(latents)[:, None, :].expand(-1, self.steps, -1)

    def reconstruct(self, series: Tensor) -> Tensor:
        return self.decode(self.encode(series))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(torch.randn(n, self.latent_dim, generator=generator))

    def training_step(self, batch, batch_idx):
        series, _ = batch
        return nn.functional.mse_loss(self.reconstruct(series), series)

    def validation_step(self, batch, batch_idx):
        pass

    def test_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def tiny_trainer(callback: SequenceMetrics, max_steps: int = 1) -> pl.Trainer:
    return pl.Trainer(
        max_steps=max_steps,
        val_check_interval=1,
        limit_train_batches=max_steps,
        num_sanity_val_steps=0,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )


def test_callback_logs_discriminative_and_predictive_at_validation_and_test():
    datamodule, model = TinySeries(), TinySequenceModel(16, 2)
    callback = build_sequence_metrics(model, datamodule, num_samples=64, seed=0)
    assert callback is not None and callback.features is None
    assert (callback.fits, callback.test_fits) == (1, 2)  # the suite's; the default is below
    callback.steps = 3
    trainer = tiny_trainer(callback)
    kinds = ("discriminative_quick", "predictive_quick", "out_of_range", "out_of_range_real")
    at_test = {
        "discriminative_quick_std",
        "predictive_quick_std",
        "discriminative_wide",
        "discriminative_wide_real",
    }
    trainer.fit(model, datamodule=datamodule)
    validated = {name.removeprefix("val/") for name in trainer.callback_metrics if name.startswith("val/")}
    assert set(kinds) <= validated and not at_test & validated
    trainer.test(model, datamodule=datamodule, verbose=False)
    assert {f"test/{kind}" for kind in (*kinds, *at_test)} <= set(trainer.callback_metrics)
    # Every split is clamped to [-1, 1], which the training split reaches: real test series stay inside.
    assert float(trainer.callback_metrics["test/out_of_range_real"]) == 0.0
    assert callback.records["test"] == {"split": "test", "n_real": 64, "n_fake": 64, "backbone": None}


def test_the_out_of_range_share_of_a_train_size_subset_is_against_the_range_its_model_is_held_in():
    from lightning_genae.datamodules import build_datamodule

    datamodule = build_datamodule("sines", data_dir="unused", channels=2, seq_len=8, train_size=20)
    datamodule.setup("fit")
    subset = datamodule.split_tensors("train")[0]
    subset_range = torch.stack([subset.amin(dim=(0, 1)), subset.amax(dim=(0, 1))])
    model_range = datamodule.normaliser.model_range()
    assert not torch.allclose(subset_range, model_range)  # 20 series reach less than the whole split
    callback = build_sequence_metrics(TinySequenceModel(8, 2), datamodule, num_samples=16, seed=0)
    assert torch.equal(callback._training_range(datamodule), model_range)


def test_a_validation_fits_each_score_once_and_the_test_as_often_as_timegans_reference(monkeypatch):
    monkeypatch.undo()  # the suite's two shorter test fits (conftest.py)
    assert (SequenceMetrics.fits, SequenceMetrics.test_fits) == (1, 10)
    assert SequenceMetrics(num_samples=8).steps == DEFAULT_STEPS


def test_callback_on_smnist_adds_the_feature_metrics_of_the_shipped_classifier():
    datamodule, model = TinySeries("smnist", steps=28, channels=28, n=40), TinySequenceModel(28, 28)
    callback = build_sequence_metrics(model, datamodule, num_samples=40, seed=0)
    assert callback is not None and callback.features is not None
    callback.steps = 2
    trainer = tiny_trainer(callback)
    trainer.validate(model, datamodule=datamodule, verbose=False)
    assert {"val/fd_classifier", "val/kid_classifier", "val/precision_classifier"} <= set(
        trainer.callback_metrics
    )
    assert callback.records["val"]["backbone"].startswith("sequence classifier (smnist")
    # --backbone none: the feature metrics are left out, the series scores stay.
    plain = build_sequence_metrics(model, datamodule, num_samples=40, seed=0, feature_metrics=False)
    assert plain is not None and plain.features is None


def test_image_data_and_models_without_the_protocols_get_no_sequence_callback():
    class Images(TinySeries):
        data_kind = "image"

    class Plain(pl.LightningModule):
        pass

    assert build_sequence_metrics(TinySequenceModel(16, 2), Images(), num_samples=8, seed=0) is None
    assert build_sequence_metrics(Plain(), TinySeries(), num_samples=8, seed=0) is None


def test_the_module_imports_without_a_warning() -> None:
    # A stray decorator once made every sequence run print a deprecation line the user could not act on.
    import importlib
    import warnings

    import lightning_genae.metrics.sequences as sequences

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.reload(sequences)
    assert [str(w.message) for w in caught if w.filename == sequences.__file__] == []


def test_the_last_validations_record_travels_in_the_checkpoint_state():
    """A run resumed only for its final evaluation validates nothing again: its summary's evaluation.val
    comes from the checkpoint, as an image run's does (GenerativeMetrics)."""
    from lightning_genae.callbacks.sequence_metrics import SequenceMetrics

    measured = SequenceMetrics(num_samples=8)
    assert measured.state_dict() == {}
    measured.records["val"] = {"split": "val", "n_real": 8, "n_fake": 8}
    resumed = SequenceMetrics(num_samples=8)
    resumed.load_state_dict(measured.state_dict())
    assert resumed.records == {"val": {"split": "val", "n_real": 8, "n_fake": 8}}


def test_every_seed_is_scored_against_the_same_real_series():
    """The spread over seeds is the models': a split capped at N compares one fixed subset of its series."""
    datamodule = TinySeries(n=96)
    picked = [
        SequenceMetrics(num_samples=20, seed=seed, steps=1)._real_series(datamodule, "val") for seed in (0, 7)
    ]
    assert picked[0].shape[0] == 20 and torch.equal(picked[0], picked[1])


def test_the_scores_own_randomness_is_the_same_for_every_run_seed():
    """The post-hoc GRUs' initialisation and batches (and KID's subsets) are seeded as the image metrics'
    are, not by the run: the same generated series score the same under every run seed, so the spread over
    seeds is the models' alone."""

    class SameSeries(TinySequenceModel):
        def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
            codes = torch.linspace(-1, 1, n * self.latent_dim).view(n, self.latent_dim)
            return self.decode(codes)

    torch.manual_seed(0)
    model, datamodule = SameSeries(16, 2), TinySeries(n=96)
    scores = [
        SequenceMetrics(num_samples=20, seed=seed, steps=3).score(model, datamodule, "val").values
        for seed in (0, 7)
    ]
    assert scores[0] == scores[1]
    assert {"discriminative_quick", "predictive_quick"} <= set(scores[0])

"""The sequence family: sines/smnist/csv data, the recurrent autoencoder, its figures and its errors."""

import json
from pathlib import Path

import pytest
import torch

from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.datamodules import DATASETS, build_datamodule
from lightning_genae.datamodules.mnist import MNISTDataModule
from lightning_genae.datamodules.sequence import Normaliser
from lightning_genae.errors import ConfigError, DataError
from lightning_genae.experiment.cli import main
from lightning_genae.experiment.config import RunConfig
from lightning_genae.experiment.resolve import resolve
from lightning_genae.models import MODELS, Autoencoder, RAEModule, Sampler

# A recurrent model small enough to train a few iterations in about a second.
TINY_RAE = (
    "--model rae --data sines --rnn-hidden 8 --latent-dim 4 --batch-size 32 "
    "--eval-every 3 --image-every 3 --ckpt-every 3 --eval-samples 64"
).split()


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# ----- data -----


def test_sequence_datasets_are_registered_with_their_kind():
    kinds = {name: cls.data_kind for name, cls in DATASETS.items()}
    assert kinds["sines"] == kinds["smnist"] == kinds["csv"] == "sequence"
    assert kinds["digits"] == kinds["mnist"] == "image"
    assert MODELS["rae"].module.data_kind == "sequence" and MODELS["gan"].module.data_kind == "image"


@pytest.mark.quick
def test_sines_are_fixed_normalised_and_shaped_by_their_options():
    first = build_datamodule("sines", data_dir="unused", channels=3, seq_len=10)
    again = build_datamodule("sines", data_dir="elsewhere", channels=3, seq_len=10, seed=7)
    assert first.data_shape == (10, 3)
    train, labels = first.split_tensors("train")
    assert train.shape == (2100, 10, 3) and train.dtype == torch.float32 and bool((labels == -1).all())
    # The data does not depend on the run seed, and each channel is standardised on the training split.
    assert torch.equal(train, again.split_tensors("train")[0])
    assert torch.allclose(train.mean(dim=(0, 1)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(train.std(dim=(0, 1), unbiased=False), torch.ones(3), atol=1e-4)
    assert len(first.split_tensors("val")[0]) == 300 and len(first.split_tensors("test")[0]) == 600
    with pytest.raises(ConfigError, match="^stride does not apply to the dataset sines"):
        build_datamodule("sines", data_dir="unused", stride=2)


def write_csv(path: Path, rows: int = 200) -> torch.Tensor:
    steps = torch.arange(rows, dtype=torch.float64)
    values = torch.stack([20 + 5 * torch.sin(steps / 7), 1000 + 10 * torch.cos(steps / 11)], dim=1)
    lines = ["temperature,pressure"] + [f"{a:.6f},{b:.6f}" for a, b in values.tolist()]
    path.write_text("\n".join(lines) + "\n")
    return values


@pytest.mark.quick
def test_csv_windows_round_trip_through_the_saved_normalisation(tmp_path):
    values = write_csv(tmp_path / "series.csv")
    datamodule = build_datamodule("csv", data_dir=tmp_path / "series.csv", seq_len=10, stride=5)
    assert datamodule.data_shape == (10, 2) and datamodule.channel_names == ["temperature", "pressure"]
    train, _ = datamodule.split_tensors("train")
    # Rows 0..139 are training rows (70%), cut every 5 rows into windows of 10.
    assert train.shape == (27, 10, 2)
    expected = values[:140].unfold(0, 10, 5).permute(0, 2, 1)
    assert torch.allclose(datamodule.normaliser.denormalise(train.double()), expected, atol=1e-3)
    # Fitted on the training rows alone: they have mean 0 and std 1 per channel, the test rows do not.
    normaliser = datamodule.normaliser
    assert normaliser.mean[0] == pytest.approx(values[:140, 0].mean().item(), rel=1e-6)
    test = datamodule.split_tensors("test")[0]
    assert torch.allclose(datamodule.normaliser.denormalise(test.double())[0], values[160:170], atol=1e-3)
    # What the checkpoint keeps restores the same scale, and a different one is refused.
    state = datamodule.state_dict()
    datamodule.load_state_dict(state)
    state["normaliser"]["std"][1] *= 2
    with pytest.raises(DataError, match="differ from the checkpoint"):
        datamodule.load_state_dict(state)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n3,4\n5,6,7\n", "line 4"),
        ("value,city\n1.5,Paris\n2.5,Rome\n", "row 2, column 'city'"),
        ("a,b\n1,2\n3,inf\n", "row 3, column 'b'"),
        ("a,b\n1,2\n3,nan\n", "row 3, column 'b'"),
        ("", "bad.csv"),
    ],
)
def test_malformed_csv_is_one_line_naming_row_and_column(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as error:
        build_datamodule("csv", data_dir=path).prepare_data()
    assert "\n" not in str(error.value)


@pytest.mark.quick
def test_malformed_csv_exits_2_with_one_line_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("value,city\n1.5,Paris\n")
    code = main(["--model", "rae", "--data", "csv", "--data-dir", str(path), "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "row 2, column 'city'" in err


def test_a_csv_too_short_for_two_windows_per_split_is_refused_before_training(tmp_path, capsys):
    # 120 rows: the validation part's 12 rows hold one window of 12; the series metrics need two per split,
    # which only the final evaluation, after training, would otherwise find.
    path = tmp_path / "short.csv"
    write_csv(path, rows=120)
    args = [*TINY_RAE, "--data", "csv", "--data-dir", str(path), "--seq-len", "12", "--max-steps", "2"]
    assert main([*args, "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the val split has 1 series" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.quick
def test_smnist_reads_mnist_rows_as_steps(mnist_data_dir):
    datamodule = build_datamodule("smnist", data_dir=mnist_data_dir)
    series, labels = datamodule.split_tensors("test")
    assert datamodule.data_shape == (28, 28) and datamodule.num_classes == 10
    assert series.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert float(series.min()) == -1.0 and float(series.max()) == 1.0
    images, image_labels = MNISTDataModule(mnist_data_dir).split_tensors("test")
    # Step t of a series is row t of the digit, in the [-1, 1] scale the image models use.
    assert torch.equal(labels, image_labels)
    assert torch.allclose(series[:50], images[:50, 0].float() / 127.5 - 1.0, atol=1e-6)
    assert len(datamodule.split_tensors("train")[0]) == 55_000


# ----- the model -----


@pytest.mark.slow
def test_rae_trains_on_sines_and_writes_a_complete_run_folder(tmp_path):
    run_dir = tmp_path / "rae"
    assert main([*TINY_RAE, "--max-steps", "6", "--output", str(run_dir)]) == 0
    summary = summary_of(run_dir)
    assert summary["global_step"] == 6 and "training codes" in summary["sampling"]
    for name in (
        "config.yaml",
        "metrics.csv",
        "normaliser.json",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
    ):
        assert (run_dir / name).is_file(), name
    images = {path.name for path in (run_dir / "images").iterdir()}
    assert {"reconstructions_step0000006.png", "samples_step0000006.png"} <= images
    assert not any(name.startswith("interpolations") for name in images), "image grids ran on series"
    final = summary["final_metrics"]
    assert all(torch.isfinite(torch.tensor(value)) for value in final.values())
    assert {"val/mse", "test/mse", "test/pca_mse"} <= set(final)
    # No classifier for sines: the feature metrics are said and recorded as skipped, not silently absent.
    assert not any("classifier" in name for name in final)
    assert "sines has no sequence feature classifier" in summary["skipped"]["classifier"]
    # The checkpoint alone rebuilds the model (series shape in its hyper-parameters) and its code
    # Gaussian, and holds the normaliser that maps its series to data units.
    checkpoint = RunCheckpoint.load(run_dir / "checkpoints" / "last.ckpt", "--test")
    assert checkpoint.contents["hyper_parameters"]["series_shape"] == [24, 1]
    model = checkpoint.restore(RAEModule, "--test")
    assert isinstance(model, Autoencoder) and isinstance(model, Sampler)
    assert model.sample(3, torch.Generator().manual_seed(0)).shape == (3, 24, 1)
    saved = json.loads((run_dir / "normaliser.json").read_text())
    assert checkpoint.contents["SinesDataModule"]["normaliser"] == saved
    # Sines are bounded: the range is recorded with the normaliser, and the decoder restored holds it.
    assert {"low", "high"} <= set(saved) and bool(model.decoder.bounded)
    assert torch.allclose(model.decoder.output_range, Normaliser.from_dict(saved).model_range())


@pytest.mark.parametrize(
    "options", [["--rnn", "lstm", "--rnn-layers", "2"], ["--rnn", "gru"], ["--variational"]]
)
@pytest.mark.slow
def test_every_rae_form_trains(tmp_path, options):
    run_dir = tmp_path / "run"
    assert main([*TINY_RAE, *options, "--max-steps", "3", "--output", str(run_dir)]) == 0
    final = summary_of(run_dir)["final_metrics"]
    assert all(torch.isfinite(torch.tensor(value)) for value in final.values())
    if "--variational" in options:
        assert "test/kl" in final and "N(0, I)" in summary_of(run_dir)["sampling"]


@pytest.mark.slow
def test_rae_reconstruction_mse_on_sines_falls_below_0_5_within_200_steps(tmp_path):
    """Untrained, the free-running reconstruction of normalised sines has an MSE near 1 (their variance);
    the same recipe outside Lightning measured 0.26 after 200 steps (12-step series, default rae)."""
    run_dir = tmp_path / "rae"
    args = [
        *"--model rae --data sines --seq-len 12 --tf-decay-steps 150".split(),
        *["--max-steps", "200", "--eval-every", "200", "--image-every", "200", "--output", str(run_dir)],
    ]
    assert main(args) == 0
    final = summary_of(run_dir)["final_metrics"]
    assert final["val/mse"] < 0.5, final["val/mse"]


@pytest.mark.slow
def test_augment_ae_on_series_uses_a_recurrent_augmenter(tmp_path):
    run_dir = tmp_path / "augmented"
    augment = "--augment ae --augmenter-steps 2 --augmenter-width 8 --augmenter-latent-dim 4".split()
    assert main([*TINY_RAE, *augment, "--max-steps", "3", "--output", str(run_dir)]) == 0
    record = summary_of(run_dir)["augmentation"]
    assert record["augmenter"]["family"] == "rae" and record["augmenter"]["val_recon_mse"] > 0
    assert (run_dir / "images" / "augmentation_step0000000.png").is_file()


# ----- what does not fit -----


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": "rae", "data": "digits"}, "--model rae models sequence data .* use --data sines"),
        ({"model": "gan", "data": "sines"}, "--model gan models image data .* or --model rae"),
        ({"model": "rae", "data": "sines", "augment": "diffaug"}, "diffaug works on images only"),
        ({"model": "rae", "data": "sines", "augment": "vae"}, "use --augment none or ae"),
        ({"model": "ae", "data": "digits", "seq_len": 8}, "seq_len does not apply to the dataset digits"),
        ({"model": "rae", "data": "sines", "image_size": 8}, "image_size does not apply to the dataset"),
        ({"model": "rae", "data": "sines", "width": 32}, "rae has none of; drop it"),
    ],
)
def test_data_kind_mismatches_are_one_line_config_errors(values, message):
    with pytest.raises(ConfigError, match=message) as error:
        resolve(RunConfig.from_dict(values))
    assert "\n" not in str(error.value)


@pytest.mark.quick
@pytest.mark.parametrize(
    ("data", "variational", "bounded"),
    [
        ("timegan_sines", False, True),
        ("timegan_sines", True, True),
        ("csv", False, False),
        ("csv", False, True),
    ],
)
def test_a_rae_generates_inside_the_training_range_of_bounded_data_and_freely_on_a_csv(
    tmp_path, data, variational, bounded
):
    """On bounded data the decoder's outputs are held inside the training split's per-channel range, whatever
    its read-out (here pushed far out by scaled weights); a CSV keeps the standardised, linear path unless
    declared bounded (csv_bounded)."""
    import pytorch_lightning as pl

    data_dir = tmp_path / "series.csv"
    write_csv(data_dir)
    sized = {"seq_len": 10, "csv_bounded": bounded} if data == "csv" else {}
    datamodule = build_datamodule(data, data_dir=data_dir, batch_size=32, **sized)
    normaliser = datamodule.normaliser
    raw_train = normaliser.denormalise(datamodule.split_tensors("train")[0].double())
    model = RAEModule(datamodule.data_shape, latent_dim=4, rnn_hidden=8, variational=variational)
    trainer = pl.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    with torch.no_grad():
        model.decoder.head.weight.mul_(100)
        model.decoder.head.bias.fill_(50)
    generated = normaliser.denormalise(model.sample(256, torch.Generator().manual_seed(0)).double())
    if not bounded:
        assert normaliser.low is None and not model.decoder.bounded
        assert (generated > raw_train.amax(dim=(0, 1))).any()
        return
    # The range is the training split's own, recorded with the normaliser, and no generated value leaves it.
    low, high = (torch.tensor(bound, dtype=torch.float64) for bound in (normaliser.low, normaliser.high))
    assert torch.allclose(low, raw_train.amin(dim=(0, 1)), atol=1e-6)
    assert torch.allclose(high, raw_train.amax(dim=(0, 1)), atol=1e-6)
    assert ((generated >= low - 1e-5) & (generated <= high + 1e-5)).all()
    # A checkpoint of data normalised without the range is refused on resume, not decoded another way.
    state = datamodule.state_dict()
    del state["normaliser"]["low"], state["normaliser"]["high"]
    with pytest.raises(DataError, match="differ from the checkpoint"):
        datamodule.load_state_dict(state)


def test_the_code_density_is_fitted_on_a_spread_of_the_training_series_not_its_first_ones(monkeypatch):
    """A recording's windows are stored in time order: a prefix of them is its earliest part. Here the
    first half of the series sits at one level and the second at another; fitted on a capped number, the
    code density's mean must be near the mean code of all of them, not of the first half."""
    from types import SimpleNamespace

    import lightning_genae.models.rae as rae

    monkeypatch.setattr(rae, "MAX_FIT_SERIES", 100)
    torch.manual_seed(0)
    t = torch.arange(12, dtype=torch.float32).view(1, 12, 1)
    wave = torch.sin(t / 2 + torch.rand(400, 1, 1) * 6)
    series = torch.cat([wave[:200] - 1.5, wave[200:] + 1.5])
    datamodule = SimpleNamespace(
        split_size=lambda split: len(series),
        items_at=lambda split, index: (series[index], None),
        to_model_range=lambda x: x,
    )
    model = RAEModule((12, 1), latent_dim=4, rnn_hidden=8)
    model._trainer = SimpleNamespace(datamodule=datamodule, global_step=0)
    model._fit_code_density()
    with torch.no_grad():
        codes = model.encode(series)
    everything, first_half = codes.mean(0), codes[:200].mean(0)
    fitted = model.code_weights @ model.code_mean
    assert (fitted - everything).norm() < 0.25 * (first_half - everything).norm()


@pytest.mark.quick
@pytest.mark.parametrize("given_as", ["datamodule", "train_dataloaders"])
def test_a_rae_trained_on_other_data_samples_from_the_code_density_it_is_given_not_n01(given_as):
    """Trained on a DataModule of the user's own (or a bare loader), the module has no split to fit its
    codes' density to: sampling is refused in one line until `fit_code_density` is given the training
    series, whose codes' mean it then draws around."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    series = torch.sin(torch.arange(12.0).view(1, 12, 1) / 2 + torch.rand(64, 1, 2) * 6) + 3.0

    class MySeries(pl.LightningDataModule):
        def train_dataloader(self) -> DataLoader:
            return DataLoader(TensorDataset(series, torch.zeros(len(series))), batch_size=16)

    model = RAEModule((12, 2), latent_dim=4, rnn_hidden=8)
    trainer = pl.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    if given_as == "datamodule":
        trainer.fit(model, datamodule=MySeries())
    else:
        trainer.fit(model, train_dataloaders=MySeries().train_dataloader())
    with pytest.raises(ConfigError, match=r"call model.fit_code_density\(series\)") as refused:
        model.sample(4)
    assert "\n" not in str(refused.value)
    # What it is given is checked as reconstruct's input is: one line, not an error from the GRU.
    for wrong in (series[:, :, 0], series[:, :6]):
        with pytest.raises((ConfigError, DataError)) as refused:
            model.fit_code_density(wrong)
        assert "fit_code_density" in str(refused.value) and "\n" not in str(refused.value)
    model.fit_code_density(series)
    model.eval()
    with torch.no_grad():
        codes = model.encode(series)
    # EM's weighted means of the components are the codes' mean.
    assert torch.allclose(model.code_weights @ model.code_mean, codes.mean(0), atol=1e-5)
    assert model.sample(4).shape == (4, 12, 2)
    assert RAEModule((12, 2), latent_dim=4, rnn_hidden=8, variational=True).sample(2).shape == (2, 12, 2)


def test_a_code_mixture_finds_separate_clusters_that_one_gaussian_would_bridge():
    """Codes in two tight clusters: a two-component mixture puts half its weight on each, one Gaussian is
    the old full-covariance fit, and fewer codes than components leave the rest at weight 0."""
    from lightning_genae.models.rae import code_gaussian, code_mixture

    generator = torch.Generator().manual_seed(0)
    codes = torch.cat(
        [torch.randn(200, 2, generator=generator) * 0.1 + sign * 5 for sign in (-1, 1)]
    ).double()
    weights, means, factors = code_mixture(codes, 2, iteration=0)
    assert torch.allclose(weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert (
        sorted(means[:, 0].round().tolist()) == [-5.0, 5.0] and factors.diagonal(dim1=1, dim2=2).max() < 0.2
    )
    one = code_mixture(codes, 1, iteration=0)
    mean, factor = code_gaussian(codes, 0)
    assert torch.equal(one[1], mean[None]) and torch.equal(one[2], factor[None])
    weights, _, _ = code_mixture(codes[:3], 5, iteration=0)
    assert (weights[:3] > 0).all() and (weights[3:] == 0).all()


def test_samples_draw_each_component_by_its_weight_and_the_same_generator_draws_the_same_codes():
    model = RAEModule((12, 1), latent_dim=2, rnn_hidden=8, code_components=3)
    model.decode = lambda codes: codes  # the drawn codes themselves
    model._fit_code_density = lambda: None
    model.code_weights.copy_(torch.tensor([0.0, 1.0, 0.0]))
    model.code_mean.copy_(torch.tensor([[-9.0, -9.0], [7.0, 7.0], [9.0, 9.0]]))
    model.code_scale.copy_(torch.eye(2).repeat(3, 1, 1) * 0.01)
    drawn = model.sample(500, torch.Generator().manual_seed(1))
    assert (drawn - 7.0).abs().max() < 0.1
    assert torch.equal(drawn, model.sample(500, torch.Generator().manual_seed(1)))


def test_the_code_gaussian_of_codes_grown_huge_factorises_and_of_infinite_ones_is_one_line():
    from lightning_genae.errors import TrainingDiverged
    from lightning_genae.models.rae import code_gaussian

    torch.manual_seed(0)
    # Nearly collinear codes of size 1e6 (a training whose losses grew large but stayed finite): a ridge at
    # the covariance's scale keeps the factor defined, and it reproduces the covariance.
    base = torch.randn(500, 1, dtype=torch.float64) * 1e6
    codes = torch.cat([base, base * 2 + torch.randn(500, 1, dtype=torch.float64), torch.randn(500, 2)], 1)
    mean, factor = code_gaussian(codes, iteration=20)
    assert torch.allclose(factor @ factor.T, torch.cov(codes.T), rtol=1e-4, atol=1e-2)
    codes[3, 1] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"^the codes of the training series are not finite at step 7"):
        code_gaussian(codes, iteration=7)


def test_the_linear_probe_needs_two_classes_in_each_split():
    from lightning_genae.metrics.representation import representation_metrics

    series = torch.randn(40, 6, 2)
    labels = torch.arange(40) % 2
    encode = lambda batch: batch.flatten(1)[:, :3]  # noqa: E731 - a stand-in encoder
    both = representation_metrics(
        encode, (series, labels), [(series[:10], labels[:10])], 3, torch.device("cpu"), prepare=lambda x: x
    )
    assert "probe_acc" in both and both["probe_n_train"] == 40 and both["probe_n_test"] == 10
    one_class = [(series[:10], torch.zeros(10, dtype=torch.long))]
    alone = representation_metrics(
        encode, (series, labels), one_class, 3, torch.device("cpu"), prepare=lambda x: x
    )
    # Without a probe its item counts are numbers attached to nothing.
    assert "pca_mse" in alone and not {"probe_acc", "probe_n_train", "probe_n_test"} & set(alone)

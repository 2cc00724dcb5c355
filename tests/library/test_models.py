"""Each model family trains on real data, keeps the shared interface, and survives DDP, AMP and NaNs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.datamodules import build_datamodule
from lightning_genae.experiment.cli import main
from lightning_genae.models import (
    MODELS,
    Autoencoder,
    AutoencoderModule,
    GANModule,
    ImageDiscriminator,
    Sampler,
    VAEModule,
)

REPO = Path(__file__).resolve().parents[2]
# Image families; the sequence family (rae) trains on series in tests/library/test_sequences.py.
IMAGE_MODELS = [name for name, spec in MODELS.items() if spec.module.data_kind == "image"]
SMALL = ["--width", "8", "--latent-dim", "8", "--batch-size", "32", "--eval-every", "5", "--image-every", "5"]


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.quick
@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_every_model_trains_a_few_steps_on_digits(model, tmp_path):
    run_dir = tmp_path / model
    assert (
        main(["--model", model, "--data", "digits", *SMALL, "--max-steps", "5", "--output", str(run_dir)])
        == 0
    )
    summary = summary_of(run_dir)
    assert summary["global_step"] == 5
    assert all(torch.isfinite(torch.tensor(v)) for v in summary["final_metrics"].values())


@pytest.mark.slow
@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_every_model_trains_on_a_small_real_mnist_subset(model, tmp_path, mnist_data_dir):
    run_dir = tmp_path / model
    args = ["--model", model, "--data", "mnist", "--data-dir", str(mnist_data_dir), "--train-size", "256"]
    # 64 samples per generative metric: at the default 5,000 / 10,000 the metrics took two thirds of the run.
    assert main([*args, *SMALL, "--eval-samples", "64", "--max-steps", "4", "--output", str(run_dir)]) == 0
    summary = summary_of(run_dir)
    assert summary["global_step"] == 4
    assert "mnist" in summary["data_summary"] and "256" in summary["data_summary"]


@pytest.mark.slow
def test_ae_loss_falls_clearly_over_100_steps_on_digits(tmp_path):
    run_dir = tmp_path / "ae"
    args = [
        "--model",
        "ae",
        "--data",
        "digits",
        "--max-steps",
        "100",
        "--eval-every",
        "100",
        "--output",
        str(run_dir),
    ]
    assert main(args) == 0
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    column = header.index("train/mse")
    train_mse = [float(row.split(",")[column]) for row in rows[1:] if row.split(",")[column]]
    final = summary_of(run_dir)["final_metrics"]
    # The first row is logged after 10 iterations (0.19-0.29 over seeds 0-2 with the seeded data order).
    assert train_mse[0] > 0.15, "an AE 10 iterations in should still reconstruct digits badly"
    assert final["test/mse"] < 0.4 * train_mse[0], (train_mse[0], final["test/mse"])


def test_the_registry_describes_each_family_as_its_module_does():
    # The registry answers --help and resolve() without importing the modules; it must not drift from them.
    for name, spec in MODELS.items():
        module = spec.module
        assert module.options_type is spec.options, name
        assert module.data_kind == spec.data_kind, name
        assert issubclass(module, ImageDiscriminator) == spec.image_discriminator, name
        assert getattr(module, "gives_real_logits", False) == spec.real_logits, name
        assert callable(getattr(module, "sample", None)) == spec.generates, name


def test_a_family_without_real_logits_refuses_adas_controller():
    from lightning_genae.augmentation.adaptive import AdaptiveStrength

    with pytest.raises(ValueError, match="BEGANModule gives ADA's controller no real logits"):
        MODELS["began"].module((1, 16, 16), width=8, adaptive_strength=AdaptiveStrength(0.6, 4, 1.0))
    assert (
        MODELS["gan"].module((1, 16, 16), width=8, adaptive_strength=AdaptiveStrength(0.6, 4, 1.0))
        is not None
    )


@pytest.mark.quick
def test_models_expose_the_shared_interface():
    shape = (1, 16, 16)
    ae, vae, gan = AutoencoderModule(shape, width=8), VAEModule(shape, width=8), GANModule(shape, width=8)
    assert isinstance(ae, Autoencoder) and not isinstance(ae, Sampler)
    assert isinstance(vae, Autoencoder) and isinstance(vae, Sampler)
    assert isinstance(gan, Sampler) and not isinstance(gan, Autoencoder)
    images = torch.rand(4, *shape) * 2 - 1
    for model in (ae, vae):
        model.eval()
        assert model.encode(images).shape == (4, 32)
        assert model.reconstruct(images).shape == images.shape
    for model in (vae, gan):
        model.eval()
        first = model.sample(3, generator=torch.Generator().manual_seed(0))
        again = model.sample(3, generator=torch.Generator().manual_seed(0))
        assert first.shape == (3, *shape) and torch.equal(first, again)
        assert first.min() >= -1 and first.max() <= 1


@pytest.mark.quick
def test_denoising_ae_corrupts_inputs_within_image_range():
    model = AutoencoderModule((1, 16, 16), width=8, denoise=0.5)
    clean = torch.zeros(2, 1, 16, 16)
    noisy = model.corrupt(clean)
    assert noisy.std() > 0.3 and noisy.abs().max() <= 1
    assert torch.equal(AutoencoderModule((1, 16, 16), width=8).corrupt(clean), clean)


def test_gan_ema_generator_is_used_for_sampling(tmp_path, capsys):
    run_dir = tmp_path / "ema"
    args = [
        "--model",
        "gan",
        "--data",
        "digits",
        *SMALL,
        "--ema",
        "0.9",
        "--max-steps",
        "4",
        "--output",
        str(run_dir),
    ]
    assert main(args) == 0
    # The EMA copy is named as what the optimizers leave alone, not as "frozen" beside the generator.
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("model: gan")]
    assert "; not trained by the optimizers: generator_ema " in line and "frozen" not in line
    model = RunCheckpoint.load(run_dir / "checkpoints" / "last.ckpt", "test").restore(GANModule, "test")
    assert model.generator_ema is not None and int(model.generator_ema.n_averaged) == 4
    # Its frozen copy has no optimizer state, and the run continues (counted as trained, the copy would make
    # the file look like a weights-only save).
    assert main(["--resume", "last", "--output", str(run_dir), "--max-steps", "5"]) == 0
    resumed = RunCheckpoint.load(run_dir / "checkpoints" / "last.ckpt", "test").restore(GANModule, "test")
    assert int(resumed.generator_ema.n_averaged) == 5
    live = dict(model.generator.named_parameters())
    averaged = dict(model.generator_ema.module.named_parameters())
    assert any(not torch.equal(live[name], averaged[name]) for name in live)
    # Batch-norm statistics follow the live generator; averaging running averages would lag behind.
    for (name, buffer), (_, ema_buffer) in zip(
        model.generator.named_buffers(), model.generator_ema.module.named_buffers(), strict=True
    ):
        assert torch.equal(buffer, ema_buffer), name


def test_hinge_loss_with_spectral_norm_trains(tmp_path):
    run_dir = tmp_path / "hinge"
    args = ["--model", "gan", "--gan-loss", "hinge", "--spectral-norm", "--data", "digits", *SMALL]
    assert main([*args, "--max-steps", "3", "--output", str(run_dir)]) == 0
    assert summary_of(run_dir)["config"]["gan_loss"] == "hinge"


def test_the_gan_papers_nets_are_its_mlp_generator_and_maxout_discriminator_and_train(tmp_path):
    model = GANModule((1, 16, 16), gan_nets="paper", latent_dim=100)
    generator_shapes = [
        tuple(m.weight.shape) for m in model.generator.modules() if isinstance(m, torch.nn.Linear)
    ]
    assert generator_shapes == [(1200, 100), (1200, 1200), (256, 1200)]
    discriminator_shapes = [
        tuple(m.weight.shape) for m in model.discriminator.modules() if isinstance(m, torch.nn.Linear)
    ]
    assert discriminator_shapes == [(240 * 5, 256), (240 * 5, 240), (1, 240)]
    # pylearn2's irange: the first layers' weights within +-0.05 (G) and +-0.005 (D), biases 0.
    assert model.generator.net[0].weight.abs().max() <= 0.05 and model.generator.net[0].bias.abs().max() == 0
    assert model.discriminator.hidden[0].linear.weight.abs().max() <= 0.005
    # A maxout unit is the largest of its pieces.
    layer = model.discriminator.hidden[0]
    x = torch.randn(3, 256)
    assert torch.equal(layer(x), layer.linear(x).view(3, 240, 5).max(dim=2).values)
    model.eval()
    assert model.discriminator(torch.zeros(4, 1, 16, 16)).shape == (4,)

    run_dir = tmp_path / "paper"
    args = [
        "--model",
        "gan",
        "--gan-nets",
        "paper",
        "--data",
        "digits",
        "--batch-size",
        "32",
        "--eval-every",
        "3",
    ]
    assert main([*args, "--max-steps", "3", "--output", str(run_dir)]) == 0
    assert summary_of(run_dir)["config"]["gan_nets"] == "paper"


def test_the_iwae_papers_vae_nets_are_tanh_layers_of_200_units_and_train(tmp_path, monkeypatch):
    model = VAEModule((1, 28, 28), vae_nets="paper", latent_dim=50)
    linear_shapes = {
        name: [tuple(layer.weight.shape) for layer in net.modules() if isinstance(layer, torch.nn.Linear)]
        for name, net in (("encoder", model.encoder), ("decoder", model.decoder))
    }
    assert linear_shapes == {
        "encoder": [(200, 784), (200, 200), (100, 200)],
        "decoder": [(200, 50), (200, 200), (784, 200)],
    }
    for net in (model.encoder, model.decoder):
        activations = {type(layer) for layer in net.modules() if not isinstance(layer, torch.nn.Linear)}
        assert activations == {torch.nn.Sequential, torch.nn.Tanh, type(net)}
    # Weights and biases: 784-200-200-(50 means, 50 log-variances) and 50-200-200-784, about 0.43 M.
    encoder = (784 * 200 + 200) + (200 * 200 + 200) + (200 * 100 + 100)
    decoder = (50 * 200 + 200) + (200 * 200 + 200) + (200 * 784 + 784)
    assert sum(p.numel() for p in model.parameters()) == encoder + decoder == 425_284
    # Glorot-uniform weights, zero biases; the encoder reads pixels on [0, 1], as the reference does.
    first = model.encoder.net[0]
    assert first.weight.abs().max() <= (6 / (784 + 200)) ** 0.5 and first.bias.abs().max() == 0
    assert first.weight.std() > 0.5 * (2 / (784 + 200)) ** 0.5
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert torch.equal(model.encoder(x), model.encoder.net((x.flatten(1) + 1) / 2))

    # The decoder's output biases start at the logits of the training pixels' means, clipped to
    # [0.001, 0.999], and a resumed run keeps its trained ones.
    started = []
    on_train_start = VAEModule.on_train_start

    def recording(self):
        on_train_start(self)
        started.append(self.decoder.net[-1].bias.detach().clone())

    monkeypatch.setattr(VAEModule, "on_train_start", recording)
    run_dir = tmp_path / "paper"
    options = ["--model", "vae", "--vae-nets", "paper", "--data", "digits", "--batch-size", "32"]
    assert main([*options, "--max-steps", "3", "--eval-every", "3", "--output", str(run_dir)]) == 0
    summary = summary_of(run_dir)
    assert summary["config"]["vae_nets"] == "paper" and summary["final_metrics"]["test/elbo"] < 0
    training_images = build_datamodule("digits", data_dir=str(tmp_path)).split_tensors("train")[0]
    pixels = training_images.double().mean(0) / 255
    assert pixels.min() == 0
    torch.testing.assert_close(started[0].double(), torch.logit(pixels.clamp(1e-3, 1 - 1e-3)).flatten())
    trained = RunCheckpoint.load(run_dir / "checkpoints" / "last.ckpt", "test").restore(VAEModule, "test")
    resume = ["--max-steps", "4", "--eval-every", "4", "--resume", "last", "--output", str(run_dir)]
    assert main([*options, *resume]) == 0
    torch.testing.assert_close(started[1], trained.decoder.net[-1].bias)


@pytest.mark.parametrize(
    ("family", "options", "says"),
    [
        ("gan --gan-nets paper", "--width 8", "--width sizes the conv nets, which gan_nets paper leaves out"),
        ("gan --gan-nets paper", "--spectral-norm", "drop spectral_norm or gan_nets paper"),
        ("vae --vae-nets paper", "--width 8", "--width sizes the conv nets, which vae_nets paper leaves out"),
    ],
)
def test_options_the_papers_nets_cannot_use_are_refused(family, options, says, capsys):
    code = main(["--model", *family.split(), "--data", "digits", *options.split(), "--print-config"])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and says in error


def test_bf16_mixed_precision_trains_the_gan_on_cpu(tmp_path):
    run_dir = tmp_path / "bf16"
    args = ["--model", "gan", "--data", "digits", *SMALL, "--precision", "bf16-mixed", "--max-steps", "3"]
    assert main([*args, "--output", str(run_dir)]) == 0
    assert summary_of(run_dir)["global_step"] == 3


@pytest.mark.slow
def test_gan_trains_under_ddp_on_two_cpu_processes(tmp_path):
    """Two real processes with the gloo backend: no unused-parameter error, one shared run folder.

    With every augmentation on, so the wrapped DataModule, the augmenter loaded by the second process and
    the discriminator-side augmentation all run under DDP too.
    """
    run_dir = tmp_path / "ddp"
    command = [
        sys.executable,
        str(REPO / "run.py"),
        "--model",
        "gan",
        "--data",
        "digits",
        *SMALL,
        *"--augment ae+ae-d+diffaug --augmenter-width 8 --augmenter-latent-dim 8".split(),
        *"--augmenter-steps 20".split(),
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--max-steps",
        "3",
        "--output",
        str(run_dir),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = summary_of(run_dir)
    assert summary["world_size"] == 2 and summary["global_step"] == 3
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # Each rank generated its share; the metric saw all of them, gathered, against the whole test split.
    test_record = summary["evaluation"]["test"]
    assert test_record["n_fake"] == test_record["n_real"] == 359
    assert summary["final_metrics"]["test/fd_classifier"] > 0
    assert summary["augmentation"]["augment"] == "ae+ae-d+diffaug"
    # The metrics are scored once for the whole run, so Lightning's advice to sync them is not printed.
    assert "sync_dist=True" not in result.stderr, result.stderr[-3000:]
    # Each process evaluates its own share of the splits: none padded with repeated items.
    assert "it is recommended to use `Trainer(devices=1" not in result.stderr, result.stderr[-3000:]


def test_each_ddp_process_draws_its_own_noise():
    from types import SimpleNamespace

    from lightning_genae.callbacks.training import SeedPerRank

    draws = []
    for rank in (0, 1):
        torch.manual_seed(0)  # what seed_everything leaves in every process alike
        SeedPerRank(seed=0).on_fit_start(SimpleNamespace(world_size=2, global_rank=rank), None)
        draws.append(torch.randn(8))
    assert not torch.equal(draws[0], draws[1])
    torch.manual_seed(0)
    expected = torch.randn(8)
    torch.manual_seed(0)
    SeedPerRank(seed=0).on_fit_start(SimpleNamespace(world_size=1, global_rank=0), None)
    assert torch.equal(torch.randn(8), expected), "a single process keeps the run's own stream"


def test_every_ddp_process_leaves_the_seed_of_the_distributed_sampler_alone(monkeypatch):
    """Lightning seeds a training loader's DistributedSampler from PL_GLOBAL_SEED when training starts: a
    process that changed it would draw its own order of the epoch, and the processes' shares would overlap."""
    from types import SimpleNamespace

    from lightning_genae.callbacks.training import SeedPerRank

    monkeypatch.setenv("PL_GLOBAL_SEED", "5")
    with torch.random.fork_rng(devices=[]):
        for rank in (0, 1):
            SeedPerRank(seed=0).on_fit_start(SimpleNamespace(world_size=2, global_rank=rank), None)
            assert os.environ["PL_GLOBAL_SEED"] == "5"

"""The VAE-GAN family: a run on digits, the shared interface, which update moves which network, its
learned-similarity loss, the discriminator-side and data-side augmentations, bad options, checkpoints."""

import json
import sys
from pathlib import Path

import pytest
import torch
from tiny import TINY_RUN

from lightning_genae.augmentation.discriminator import DiffAugment
from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.experiment import augmenter as latent_module
from lightning_genae.experiment.cli import main
from lightning_genae.models import MODELS, Autoencoder, ImageDiscriminator, Sampler, VAEGANModule
from lightning_genae.models.vaegan import feature_reconstruction_loss
from lightning_genae.models.variational import reparameterize
from lightning_genae.run_files import last_checkpoint

SHAPE = (1, 16, 16)
TINY = [*TINY_RUN, "--eval-samples", "100"]
NETWORKS = ("encoder", "decoder", "discriminator")


@pytest.fixture(scope="module")
def vaegan_run(tmp_path_factory) -> Path:
    """One finished 3-iteration vaegan run on digits; read it, never write into it."""
    run_dir = tmp_path_factory.mktemp("vaegan") / "run"
    assert main(["--model", "vaegan", *TINY, "--max-steps", "3", "--output", str(run_dir)]) == 0
    return run_dir


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_a_tiny_run_writes_a_complete_run_folder(vaegan_run):
    assert (vaegan_run / "config.yaml").is_file() and (vaegan_run / "metrics.csv").is_file()
    assert (vaegan_run / "checkpoints" / "last.ckpt").is_file()
    images = {path.name.split("_step")[0] for path in (vaegan_run / "images").glob("*.png")}
    assert {"reconstructions", "samples"} <= images
    summary = summary_of(vaegan_run)
    assert summary["global_step"] == 3 and summary["headline_metric"] == "val/fd_classifier"
    final = summary["final_metrics"]
    for name in ("test/fd_classifier", "test/mse", "test/kl", "val/mse", "val/kl", "test/probe_acc"):
        assert torch.isfinite(torch.tensor(final[name])), name
    header = (vaegan_run / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in ("train/loss_d", "train/loss_enc", "train/loss_dec", "train/kl", "train/feature"):
        assert name in header, name


def test_it_is_an_autoencoder_a_sampler_and_an_image_discriminator():
    assert MODELS["vaegan"].module is VAEGANModule and issubclass(VAEGANModule, ImageDiscriminator)
    model = VAEGANModule(SHAPE, width=8, latent_dim=4).eval()
    assert isinstance(model, Autoencoder) and isinstance(model, Sampler)
    images = torch.rand(5, *SHAPE) * 2 - 1
    assert model.encode(images).shape == (5, 4)
    assert torch.equal(model.encode(images), model.posterior(images)[0]), "codes are posterior means"
    assert model.reconstruct(images).shape == images.shape
    first = model.sample(3, generator=torch.Generator().manual_seed(0))
    again = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert first.shape == (3, *SHAPE) and torch.equal(first, again)
    assert first.min() >= -1 and first.max() <= 1


def test_the_feature_loss_reaches_encoder_and_decoder_and_is_zero_for_a_perfect_reconstruction():
    torch.manual_seed(0)
    model = VAEGANModule(SHAPE, width=8, latent_dim=4)
    images = torch.rand(6, *SHAPE) * 2 - 1
    reconstructed = model.decoder(reparameterize(*model.posterior(images)))
    loss = feature_reconstruction_loss(*model.paired_features(reconstructed, images))
    loss.backward()
    for network in ("encoder", "decoder"):
        grads = [p.grad for p in getattr(model, network).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), network
    # The target is the real image's features: no gradient is asked of the images' own path.
    same = feature_reconstruction_loss(*model.paired_features(images.clone(), images))
    assert same.item() == pytest.approx(0.0, abs=1e-10)


def test_the_feature_loss_sees_a_reconstructions_shift_that_batch_norm_of_its_own_batch_would_hide():
    torch.manual_seed(0)
    model = VAEGANModule(SHAPE, width=8, latent_dim=4)
    images = torch.rand(16, *SHAPE) * 2 - 1
    # Half the contrast: per-channel statistics of a batch of its own would normalise most of it away.
    flattened = images * 0.5
    joint = feature_reconstruction_loss(*model.paired_features(flattened, images))
    with torch.no_grad():
        apart = feature_reconstruction_loss(
            model.discriminator.features(flattened), model.discriminator.features(images)
        )
    assert joint > 5 * apart


def test_augmented_discriminator_inputs_give_an_image_and_its_reconstruction_the_same_transform():
    torch.manual_seed(0)
    model = VAEGANModule(
        SHAPE, width=8, latent_dim=4, discriminator_augmentation=DiffAugment("translation,cutout")
    )
    images = torch.rand(6, *SHAPE) * 2 - 1
    reconstruction_features, image_features = model.paired_features(images.clone(), images)
    assert torch.equal(reconstruction_features, image_features)
    # Independent draws, as the discriminator's own update makes, would differ.
    assert not torch.equal(model.discriminator_input(images), model.discriminator_input(images))


class StepRecorder(VAEGANModule):
    """Records, for each optimizer.step(), which networks' weights it changed."""

    def configure_optimizers(self):
        optimizers = super().configure_optimizers()
        self.changed: list[tuple[int, set[str]]] = []
        for index, optimizer in enumerate(optimizers):
            optimizer.register_step_pre_hook(lambda *_: self.snapshot.update(self.weights()))
            optimizer.register_step_post_hook(lambda *_, index=index: self.record(index))
        self.snapshot: dict[str, torch.Tensor] = {}
        return optimizers

    def weights(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self.named_parameters()}

    def record(self, index: int) -> None:
        after = self.weights()
        moved = {name.split(".")[0] for name, w in after.items() if not torch.equal(w, self.snapshot[name])}
        self.changed.append((index, moved))


def test_each_optimizer_step_changes_only_its_own_network(tmp_path):
    import pytorch_lightning as pl

    from lightning_genae.datamodules import build_datamodule

    torch.manual_seed(0)
    model = StepRecorder(SHAPE, width=8, latent_dim=4)
    data = build_datamodule("digits", data_dir=str(tmp_path), batch_size=16)
    trainer = pl.Trainer(
        max_steps=2 * model.optimizer_steps_per_iteration,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=data)
    assert model.changed == [(0, {"discriminator"}), (1, {"encoder"}), (2, {"decoder"})] * 2
    assert trainer.global_step == 6 and model.iteration == 2


def test_diffaug_on_the_discriminator_trains(tmp_path):
    run_dir = tmp_path / "diffaug"
    args = ["--model", "vaegan", "--augment", "diffaug", *TINY, "--max-steps", "3"]
    assert main([*args, "--output", str(run_dir)]) == 0
    summary = summary_of(run_dir)
    assert summary["global_step"] == 3 and summary["augmentation"]["augment"] == "diffaug"


def test_a_vaegan_trains_as_the_data_side_augmenter_and_from_a_runs_checkpoint(
    tmp_path, monkeypatch, vaegan_run
):
    monkeypatch.setattr(latent_module, "default_cache_dir", lambda: tmp_path / "cache")
    augmenter = "--augmenter-width 8 --augmenter-latent-dim 4 --augmenter-steps 4".split()
    run_dir = tmp_path / "augmented"
    args = ["--model", "ae", "--augment", "vaegan", *augmenter, *TINY, "--max-steps", "2"]
    assert main([*args, "--output", str(run_dir)]) == 0
    record = summary_of(run_dir)["augmentation"]["augmenter"]
    assert record["family"] == "vaegan" and record["steps"] == 4 and record["source"] == "trained now"
    # --augmenter-steps counts iterations; Lightning counts the three optimizer steps of each.
    cached = torch.load(record["path"], map_location="cpu", weights_only=False)
    assert cached["global_step"] == 4 * VAEGANModule.optimizer_steps_per_iteration

    given = tmp_path / "given"
    checkpoint = str(last_checkpoint(vaegan_run))
    args = ["--model", "ae", "--augment", "vaegan", "--augment-ckpt", checkpoint, *TINY, "--max-steps", "2"]
    assert main([*args, "--output", str(given)]) == 0
    record = summary_of(given)["augmentation"]["augmenter"]
    assert record["source"] == "checkpoint" and record["family"] == "vaegan"


BAD = {
    "gamma zero": (["--vaegan-gamma", "0"], "--vaegan-gamma"),
    "gamma nan": (["--vaegan-gamma", "nan"], "--vaegan-gamma"),
    "negative beta": (["--beta", "-1"], "--beta"),
    "zero lr": (["--lr", "0"], "--lr"),
    "another family's option": (["--gan-loss", "hinge"], "--gan-loss"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_option_values_exit_2_with_one_line(name, tmp_path, capsys):
    args, expected = BAD[name]
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(["--model", "vaegan", *args, *TINY, "--max-steps", "2", "--output", str(run_dir)]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err
    assert not run_dir.exists()


def test_the_checkpoint_rebuilds_the_trained_module(vaegan_run):
    checkpoint = RunCheckpoint.load(last_checkpoint(vaegan_run), "--evaluate")
    module = checkpoint.restore(VAEGANModule, "--evaluate")
    assert not module.training and module.latent_dim == 8 and module.options.vaegan_gamma > 0
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, checkpoint.contents["state_dict"][name]), name
    assert module.reconstruct(torch.zeros(2, *SHAPE)).shape == (2, *SHAPE)


@pytest.mark.parametrize(
    "family", [["--model", "vaegan"], ["--model", "began", "--d-loss", "ebgan"], ["--model", "began"]]
)
def test_a_checkpoint_of_another_form_of_the_objective_says_so_when_resumed(tmp_path, capsys, family):
    """A checkpoint that records no form of the objective (the feature loss in two passes, the hinge on the
    batch's mean, k_t moved by the fakes' energy after D's step) goes on under this form: trained part under
    each, which the resume says."""
    from tiny import TINY_RUN

    from lightning_genae.experiment.cli import main
    from lightning_genae.models.base import OBJECTIVE_FORM_KEY

    run_dir = tmp_path / "run"
    assert main([*family, *TINY_RUN, "--max-steps", "2", "--output", str(run_dir)]) == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert OBJECTIVE_FORM_KEY in checkpoint
    capsys.readouterr()
    assert main(["--output", str(run_dir), "--resume", "last", "--max-steps", "3"]) == 0
    assert "another form" not in capsys.readouterr().out
    checkpoint.pop(OBJECTIVE_FORM_KEY)
    torch.save(checkpoint, last)
    assert main(["--output", str(run_dir), "--resume", "last", "--max-steps", "4"]) == 0
    assert "records another form of" in capsys.readouterr().out

"""The AAE paper's MNIST training (`--aae-training paper`, Makhzani et al. 2015, appendix A.1): its
initialisation, output, cost and per-phase SGD schedule, checked against the iterations computed by hand
from the same minibatches and prior draws."""

import copy

import pytest
import torch
import torch.nn.functional as F

from lightning_genae.experiment.cli import main
from lightning_genae.models import aae as aae_module
from lightning_genae.models.aae import AAEModule, paper_rates
from lightning_genae.nets.mlp import MLPEncoder

PAPER = ["--model", "aae", "--aae-nets", "paper", "--aae-training", "paper", "--data", "digits"]


def test_every_rate_is_a_tenth_after_50_epochs_and_the_momenta_stay():
    assert paper_rates(0) == ((0.01, 0.9), (0.1, 0.1))
    assert paper_rates(49) == ((0.01, 0.9), (0.1, 0.1))
    (lr_rec, m_rec), (lr_reg, m_reg) = paper_rates(50)
    assert (lr_rec, m_rec, lr_reg, m_reg) == pytest.approx((0.001, 0.9, 0.01, 0.1))
    assert paper_rates(1000) == paper_rates(50)


def test_the_papers_initialisation_output_and_encoder_input():
    torch.manual_seed(0)
    model = AAEModule((1, 16, 16), aae_nets="paper", aae_training="paper", latent_dim=8)
    for net in (model.encoder, model.decoder, model.latent_discriminator):
        for layer in net.modules():
            if isinstance(layer, torch.nn.Linear):
                assert layer.weight.std().item() == pytest.approx(0.01, rel=0.1)
                assert not layer.bias.any()
    assert model.decoder.output == "sigmoid" and model.encoder.unit_pixels
    # A sigmoid of zero-bias pre-activations near 0: mid-grey, on the framework's [-1, 1] range.
    assert model.sample(4).abs().max() < 0.05
    adam_run = AAEModule((1, 16, 16), aae_nets="paper", latent_dim=8)
    assert adam_run.decoder.output == "tanh" and not adam_run.encoder.unit_pixels


def test_an_encoder_reading_unit_pixels_maps_the_frameworks_range_to_0_1():
    encoder = MLPEncoder((1, 4, 4), 3, hidden=5, unit_pixels=True)
    images = torch.rand(2, 1, 4, 4) * 2 - 1
    assert torch.equal(encoder(images), encoder.net(((images + 1) / 2).flatten(1)))


@pytest.mark.parametrize("prior", ["gaussian", "mixture"])
def test_the_prior_std_scales_the_draws_and_the_code_kl_reference(prior):
    options = {"latent_dim": 8, "aae_prior": prior}
    unit = AAEModule((1, 16, 16), **options)
    wide = AAEModule((1, 16, 16), aae_prior_std=5.0, **options)
    components = torch.randint(
        10 if prior == "mixture" else 1, (20_000,), generator=torch.Generator().manual_seed(1)
    )
    draws = [
        module.prior_draws(20_000, torch.Generator().manual_seed(0), components=components)
        for module in (unit, wide)
    ]
    assert torch.allclose(draws[1], 5 * draws[0])
    # The code KL is measured against the scaled prior: its own draws are near 0 nats from it, the unit
    # prior's far.
    for codes, near in ((draws[1], True), (draws[0], False)):
        metric = wide.code_kl["val"]
        metric.reset()
        metric.update(codes)
        assert (metric.compute().item() < 0.01) is near


def snapshot(module: AAEModule) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: copy.deepcopy(getattr(module, name).state_dict())
        for name in ("encoder", "decoder", "latent_discriminator")
    }


def mlp(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Two hidden ReLU layers and a linear output, written out."""
    h = F.relu(F.linear(x, weights["net.0.weight"], weights["net.0.bias"]))
    h = F.relu(F.linear(h, weights["net.2.weight"], weights["net.2.bias"]))
    return F.linear(h, weights["net.4.weight"], weights["net.4.bias"])


def momentum_step(params: list, velocities: list, grads: tuple, lr: float, momentum: float) -> None:
    """The classic momentum rule, the velocity in step units: inc = m inc - lr g, p += inc."""
    with torch.no_grad():
        for p, v, grad in zip(params, velocities, grads, strict=True):
            v.mul_(momentum).sub_(lr * grad)
            p.add_(v)


def test_three_iterations_are_the_papers_phases_under_sgd_with_momentum_across_the_rate_drop(
    tmp_path, monkeypatch
):
    """Two minibatches per epoch and the drop after the first epoch: the third iteration runs at a tenth of
    the rates, so a velocity kept in the wrong units would show."""
    monkeypatch.setattr(aae_module, "PAPER_RATE_DROP_EPOCH", 1)
    record: dict[str, list] = {"images": [], "draws": [], "weights": []}
    step, draws_of = AAEModule.training_step, AAEModule.prior_draws

    def training_step(self, batch, batch_idx):
        record["weights"].append(snapshot(self))
        record["images"].append(batch[0].clone())
        step(self, batch, batch_idx)

    def prior_draws(self, n, generator=None, components=None):
        draws = draws_of(self, n, generator, components)
        if self.training:
            record["draws"].append(draws.clone())
        return draws

    monkeypatch.setattr(AAEModule, "training_step", training_step)
    monkeypatch.setattr(AAEModule, "prior_draws", prior_draws)
    options = [
        *PAPER,
        "--latent-dim",
        "4",
        "--aae-prior-std",
        "5",
        "--train-size",
        "32",
        "--batch-size",
        "16",
    ]
    run = [*options, "--max-steps", "3", "--eval-every", "3", "--accelerator", "cpu"]
    assert main([*run, "--output", str(tmp_path / "run")]) == 0
    assert len(record["images"]) == 3 and len(record["draws"]) == 3
    final = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]

    nets = {
        name: {k: v.clone().requires_grad_() for k, v in weights.items()}
        for name, weights in record["weights"][0].items()
    }
    encoder, decoder, discriminator = nets["encoder"], nets["decoder"], nets["latent_discriminator"]
    autoencoder = [*encoder.values(), *decoder.values()]
    velocity = {
        phase: [torch.zeros_like(p) for p in params]
        for phase, params in (
            ("reconstruction", autoencoder),
            ("discriminator", list(discriminator.values())),
            ("encoder", list(encoder.values())),
        )
    }
    for iteration in range(3):
        (lr_rec, m_rec), (lr_reg, m_reg) = (
            ((0.01, 0.9), (0.1, 0.1)) if iteration < 2 else ((0.001, 0.9), (0.01, 0.1))
        )
        pixels = ((record["images"][iteration] + 1) / 2).flatten(1)  # the paper's [0, 1] pixels
        codes = mlp(encoder, pixels)
        decoded = torch.sigmoid(mlp(decoder, codes))
        euclidean = ((decoded - pixels) ** 2).sum(1).mean()
        momentum_step(
            autoencoder,
            velocity["reconstruction"],
            torch.autograd.grad(euclidean, autoencoder),
            lr_rec,
            m_rec,
        )
        # The regularisation phase: D judges the codes of the encoder the reconstruction phase stepped.
        with torch.no_grad():
            codes = mlp(encoder, pixels)
        prior_logits = mlp(discriminator, record["draws"][iteration]).squeeze(1)
        code_logits = mlp(discriminator, codes).squeeze(1)
        loss_d = F.softplus(-prior_logits).mean() + F.softplus(code_logits).mean()
        params_d = list(discriminator.values())
        momentum_step(
            params_d, velocity["discriminator"], torch.autograd.grad(loss_d, params_d), lr_reg, m_reg
        )
        loss_g = F.softplus(-mlp(discriminator, mlp(encoder, pixels)).squeeze(1)).mean()
        params_e = list(encoder.values())
        momentum_step(params_e, velocity["encoder"], torch.autograd.grad(loss_g, params_e), lr_reg, m_reg)

        trained = record["weights"][iteration + 1] if iteration < 2 else None
        for net_name, weights in nets.items():
            for name, p in weights.items():
                expected = final[f"{net_name}.{name}"] if trained is None else trained[net_name][name]
                assert torch.allclose(expected, p.detach(), atol=1e-6, rtol=1e-4), (iteration, net_name, name)


def test_a_resumed_run_keeps_its_place_in_the_schedule(tmp_path, monkeypatch):
    monkeypatch.setattr(aae_module, "PAPER_RATE_DROP_EPOCH", 1)
    run = [*PAPER, "--train-size", "32", "--batch-size", "16", "--eval-every", "2", "--accelerator", "cpu"]
    run += ["--output", str(tmp_path)]
    assert main([*run, "--max-steps", "3"]) == 0
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    saved_rates = [group["lr"] for state in saved["optimizer_states"] for group in state["param_groups"]]
    assert saved_rates == pytest.approx([0.001, 0.01, 0.01])
    seen = []
    step = AAEModule.training_step

    def training_step(self, batch, batch_idx):
        seen.append(
            [group["lr"] for optimizer in self.trainer.optimizers for group in optimizer.param_groups]
        )
        step(self, batch, batch_idx)

    monkeypatch.setattr(AAEModule, "training_step", training_step)
    assert main([*run, "--max-steps", "4", "--resume", "last"]) == 0
    # Restored at the dropped rates: the schedule set nothing new, so no velocity was rescaled.
    assert seen == [pytest.approx([0.001, 0.01, 0.01])]


def test_a_diverged_run_on_the_papers_schedule_is_not_told_to_lower_lr():
    assert AAEModule((1, 16, 16), aae_nets="paper", aae_training="paper").lower_learning_rate() is None


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ("--aae-training paper", "aae_training paper needs aae_nets paper: add aae_nets paper"),
        ("--aae-nets paper --aae-training paper --lr 0.01", "drop lr or aae_training paper"),
        (
            "--aae-nets paper --aae-training paper --aae-adversarial-weight 0.05",
            "drop aae_adversarial_weight or aae_training paper",
        ),
        ("--aae-nets paper --aae-training paper --recon-loss bce", "drop recon_loss bce"),
        ("--aae-prior-std 0", "--aae-prior-std"),
    ],
)
def test_what_the_papers_training_cannot_use_is_refused(options, says, capsys):
    assert main(["--model", "aae", "--data", "digits", *options.split(), "--print-config"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and says in error


def test_a_refused_resume_names_only_the_options_this_run_may_change(tmp_path, capsys):
    run = [
        *PAPER,
        "--batch-size",
        "16",
        "--eval-every",
        "1",
        "--accelerator",
        "cpu",
        "--output",
        str(tmp_path),
    ]
    assert main([*run, "--max-steps", "1"]) == 0
    capsys.readouterr()
    assert main([*run, "--max-steps", "2", "--resume", "last", "--aae-prior-std", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--aae-prior-std 2" in error and "changeable on resume: " in error
    changeable = error.split("changeable on resume: ")[1].split(")")[0].split(", ")
    assert "--max-steps" in changeable
    assert "--lr" not in changeable and "--aae-adversarial-weight" not in changeable

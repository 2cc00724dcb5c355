"""The GAN paper's MNIST training (`--gan-training paper`): goodfeli/adversarial's AdversaryCost2 update
under pylearn2's SGD schedule, checked against the update computed by hand from the same draws."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from lightning_genae.cli import main
from lightning_genae.datamodules import build_datamodule
from lightning_genae.models.gan import GANModule, paper_learning_rate, paper_momentum
from lightning_genae.nets import MaxoutDiscriminator, MLPDecoder


def test_the_schedule_is_pylearn2s_exponential_decay_and_momentum_adjustor():
    assert paper_learning_rate(0) == 0.1
    assert paper_learning_rate(1) == pytest.approx(0.1 / 1.000004, rel=1e-12)
    assert paper_learning_rate(100_000) == pytest.approx(0.1 * math.exp(-100_000 * math.log(1.000004)))
    # The floor: 0.1 / 1.000004^t reaches 1e-6 after about 2.9 million updates.
    assert paper_learning_rate(5_000_000) == 1e-6
    # MomentumAdjustor(start=1, saturate=250): 0.5 in the first epoch, 0.7 from the 250th on.
    assert paper_momentum(0) == 0.5
    assert paper_momentum(1) == pytest.approx(0.5 + 0.2 / 249)
    assert paper_momentum(249) == pytest.approx(0.7)
    assert paper_momentum(1000) == pytest.approx(0.7)


def test_the_sigmoid_output_starts_at_the_pixel_means():
    decoder = MLPDecoder((1, 4, 4), latent_dim=3, hidden=5, output="sigmoid")
    means = torch.linspace(0, 1, 16).view(1, 4, 4).double()
    decoder.start_at_pixel_means(means)
    for layer in decoder.net:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.zeros_(layer.weight)
    # On the framework's [-1, 1] range: 2 * mean - 1, with pylearn2's clip of 0 and 1 to 1e-7 from them.
    drawn = (decoder(torch.randn(2, 3)).double() + 1) / 2
    assert torch.allclose(drawn, means.clamp(1e-7, 1 - 1e-7).expand(2, 1, 4, 4).float().double(), atol=1e-6)
    with pytest.raises(ValueError, match="only the sigmoid output"):
        MLPDecoder((1, 4, 4), latent_dim=3, hidden=5).start_at_pixel_means(means)


def test_the_maxout_discriminator_reads_unit_pixels_and_shares_its_dropout_masks():
    d = MaxoutDiscriminator((1, 4, 4), units=3, pieces=2)
    masks = d.dropout_masks(4000, torch.zeros(1))
    for mask, keep in zip(masks, (0.8, 0.5, 0.5), strict=True):
        assert mask.unique().tolist() == pytest.approx([0.0, 1 / keep])
        assert (mask > 0).float().mean().item() == pytest.approx(keep, abs=0.02)
    x = torch.rand(5, 1, 4, 4) * 2 - 1
    few = tuple(m[:5] for m in masks)
    assert torch.equal(d(x, few), d(x, few)), "the same masks give the same logits"
    d.eval()
    hidden = d.hidden[1](d.hidden[0](((x + 1) / 2).flatten(1)))
    assert torch.allclose(d(x), d.logit(hidden).squeeze(1)), "no dropout in eval; pixels read in [0, 1]"


def test_an_update_is_the_reference_simultaneous_update_under_sgd_with_momentum(tmp_path, monkeypatch):
    """Two iterations of `--gan-training paper` against AdversaryCost2's gradients computed by hand from
    the same noise, real batch and dropout masks, each network stepped by pylearn2's momentum rule."""
    record: dict[str, list] = {"noise": [], "masks": [], "real": [], "weights": []}

    def snapshot(module: GANModule) -> tuple[dict, dict]:
        return copy.deepcopy(module.generator.state_dict()), copy.deepcopy(module.discriminator.state_dict())

    fit_start, step = GANModule.on_fit_start, GANModule.paper_training_step
    noise, masks = GANModule.training_noise, MaxoutDiscriminator.dropout_masks

    def on_fit_start(self):
        fit_start(self)
        record["weights"].append(snapshot(self))

    def paper_training_step(self, batch):
        record["real"].append(batch[0].clone())
        step(self, batch)
        record["weights"].append(snapshot(self))

    monkeypatch.setattr(GANModule, "on_fit_start", on_fit_start)
    monkeypatch.setattr(GANModule, "paper_training_step", paper_training_step)

    def training_noise(self, n):
        record["noise"].append(noise(self, n))
        return record["noise"][-1]

    def dropout_masks(self, n, reference):
        record["masks"].append(masks(self, n, reference))
        return record["masks"][-1]

    monkeypatch.setattr(GANModule, "training_noise", training_noise)
    monkeypatch.setattr(MaxoutDiscriminator, "dropout_masks", dropout_masks)

    options = ["--model", "gan", "--gan-nets", "paper", "--gan-training", "paper", "--latent-dim", "10"]
    options += ["--data", "digits", "--batch-size", "16", "--eval-every", "2", "--max-steps", "2"]
    assert main([*options, "--output", str(tmp_path / "run")]) == 0
    assert len(record["real"]) == 2 and len(record["masks"]) == 4  # per update: the fakes', then the reals'

    generator = MLPDecoder((1, 16, 16), 10, hidden=1200, output="sigmoid")
    discriminator = MaxoutDiscriminator((1, 16, 16))
    generator.load_state_dict(record["weights"][0][0])
    discriminator.load_state_dict(record["weights"][0][1])
    # The generator starts at the training pixels' means (digits' training split, as stored).
    training_images = build_datamodule("digits", data_dir=str(tmp_path)).split_tensors("train")[0]
    pixels = training_images.double().mean(0) / 255
    start = torch.logit(pixels.clamp(1e-7, 1 - 1e-7)).flatten()
    assert torch.allclose(generator.net[-1].bias.double(), start)

    params = list(discriminator.parameters()) + list(generator.parameters())
    velocity = [torch.zeros_like(p) for p in params]  # pylearn2's `inc`, in step units
    for update in range(2):
        fake = generator(record["noise"][update])
        fake_masks, real_masks = record["masks"][2 * update], record["masks"][2 * update + 1]
        fake_logits = discriminator(fake, fake_masks)
        real_logits = discriminator(record["real"][update], real_masks)
        d_objective = 0.5 * (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())
        g_objective = F.softplus(-fake_logits).mean()
        d_grads = torch.autograd.grad(d_objective, list(discriminator.parameters()), retain_graph=True)
        g_grads = torch.autograd.grad(g_objective, list(generator.parameters()))
        lr, momentum = 0.1 / 1.000004**update, 0.5  # one epoch: momentum still 0.5
        with torch.no_grad():
            for p, v, g in zip(params, velocity, [*d_grads, *g_grads], strict=True):
                v.mul_(momentum).sub_(lr * g)
                p.add_(v)
        trained_g, trained_d = record["weights"][update + 1]
        for name, value in discriminator.state_dict().items():
            assert torch.allclose(trained_d[name], value, atol=1e-6, rtol=1e-5), (update, "D", name)
        for name, value in generator.state_dict().items():
            assert torch.allclose(trained_g[name], value, atol=1e-6, rtol=1e-5), (update, "G", name)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ("--gan-training paper", "is the schedule of the GAN paper's MNIST nets: add --gan-nets paper"),
        ("--gan-nets paper --gan-training paper --lr 0.01", "drop --lr or --gan-training paper"),
        ("--gan-nets paper --gan-training paper --gan-loss hinge", "drop --gan-loss hinge"),
    ],
)
def test_what_the_papers_training_cannot_use_is_refused(options, says, capsys):
    assert main(["--model", "gan", "--data", "digits", *options.split(), "--print-config"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and says in error

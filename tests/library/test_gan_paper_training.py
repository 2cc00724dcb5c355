"""The GAN paper's MNIST training (`--gan-training paper`): goodfeli/adversarial's AdversaryCost2 update
under pylearn2's SGD schedule, checked against the update computed by hand from the same draws."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from lightning_genae.checkpoint import resume_advice
from lightning_genae.datamodules import build_datamodule
from lightning_genae.experiment.cli import main
from lightning_genae.models import gan as gan_module
from lightning_genae.models.gan import GANModule, paper_learning_rate, paper_momentum
from lightning_genae.nets.mlp import MaxoutDiscriminator, MLPDecoder

PAPER = ["--model", "gan", "--gan-nets", "paper", "--gan-training", "paper", "--data", "digits"]


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


def reference_generator(weights: dict, z: torch.Tensor) -> torch.Tensor:
    """mnist.yaml's generator written out: two ReLU layers, a sigmoid output, shown on [-1, 1]."""
    h = F.relu(F.linear(z, weights["net.0.weight"], weights["net.0.bias"]))
    h = F.relu(F.linear(h, weights["net.2.weight"], weights["net.2.bias"]))
    return 2 * torch.sigmoid(F.linear(h, weights["net.4.weight"], weights["net.4.bias"])) - 1


def reference_discriminator(weights: dict, images: torch.Tensor, masks: tuple) -> torch.Tensor:
    """mnist.yaml's discriminator written out: pixels in [0, 1], each layer's input dropped by its mask,
    two maxout layers of 240 units x 5 pieces, a linear logit."""
    h = (images.flatten(1) + 1) / 2
    for layer, mask in zip(("hidden.0", "hidden.1"), masks, strict=False):
        pieces = F.linear(h * mask, weights[f"{layer}.linear.weight"], weights[f"{layer}.linear.bias"])
        h = pieces.view(len(h), 240, 5).amax(dim=2)
    return F.linear(h * masks[2], weights["logit.weight"], weights["logit.bias"]).squeeze(1)


@pytest.mark.parametrize("decay", [1.000004, 1.5])
def test_an_update_is_the_reference_simultaneous_update_under_sgd_with_momentum(tmp_path, monkeypatch, decay):
    """Three iterations of `--gan-training paper` against AdversaryCost2's objectives on the nets written
    out by hand, from the same noise, real batch and dropout masks, the gradients of both at the same
    weights, and pylearn2's momentum rule in step units. A decay of 1.5 per update makes the learning rate
    change between updates large enough that a momentum kept in the wrong units would show."""
    monkeypatch.setattr(gan_module, "PAPER_LR_DECAY", decay)
    record: dict[str, list] = {"noise": [], "masks": [], "real": [], "weights": []}

    def snapshot(module: GANModule) -> tuple[dict, dict]:
        return copy.deepcopy(module.generator.state_dict()), copy.deepcopy(module.discriminator.state_dict())

    train_start, step = GANModule.on_train_start, GANModule.paper_training_step
    noise, masks = GANModule.training_noise, MaxoutDiscriminator.dropout_masks

    def on_train_start(self):
        train_start(self)
        record["weights"].append(snapshot(self))

    def paper_training_step(self, batch):
        record["real"].append(batch[0].clone())
        step(self, batch)
        record["weights"].append(snapshot(self))

    def training_noise(self, n):
        record["noise"].append(noise(self, n))
        return record["noise"][-1]

    def dropout_masks(self, n, reference):
        record["masks"].append(masks(self, n, reference))
        return record["masks"][-1]

    monkeypatch.setattr(GANModule, "on_train_start", on_train_start)
    monkeypatch.setattr(GANModule, "paper_training_step", paper_training_step)
    monkeypatch.setattr(GANModule, "training_noise", training_noise)
    monkeypatch.setattr(MaxoutDiscriminator, "dropout_masks", dropout_masks)

    options = [*PAPER, "--latent-dim", "10", "--batch-size", "16", "--eval-every", "3", "--max-steps", "3"]
    assert main([*options, "--accelerator", "cpu", "--output", str(tmp_path / "run")]) == 0
    assert len(record["real"]) == 3 and len(record["masks"]) == 6  # per update: the fakes', then the reals'

    g, d = ({k: v.clone().requires_grad_() for k, v in w.items()} for w in record["weights"][0])
    # The generator starts at the training pixels' means (digits' training split, as stored).
    training_images = build_datamodule("digits", data_dir=str(tmp_path)).split_tensors("train")[0]
    pixels = training_images.double().mean(0) / 255
    assert torch.allclose(g["net.4.bias"].double(), torch.logit(pixels.clamp(1e-7, 1 - 1e-7)).flatten())

    names = [("D", name) for name in d] + [("G", name) for name in g]
    params = [*d.values(), *g.values()]
    inc = [torch.zeros_like(p) for p in params]  # pylearn2's velocity, in step units
    for update in range(3):
        fake_logits = reference_discriminator(d, reference_generator(g, record["noise"][update]),
                                              record["masks"][2 * update])  # fmt: skip
        real_logits = reference_discriminator(d, record["real"][update], record["masks"][2 * update + 1])
        d_objective = 0.5 * (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())
        g_objective = F.softplus(-fake_logits).mean()
        grads = torch.autograd.grad(d_objective, list(d.values()), retain_graph=True)
        grads += torch.autograd.grad(g_objective, list(g.values()))
        lr = 0.1 / decay**update  # momentum: 0.5 throughout the first epoch
        with torch.no_grad():
            for p, v, grad in zip(params, inc, grads, strict=True):
                v.mul_(0.5).sub_(lr * grad)
                p.add_(v)
        trained_g, trained_d = record["weights"][update + 1]
        for (net, name), p in zip(names, params, strict=True):
            trained = (trained_d if net == "D" else trained_g)[name]
            assert torch.allclose(trained, p.detach(), atol=1e-6, rtol=1e-5), (update, net, name)


def test_a_resumed_run_keeps_its_trained_output_biases_and_its_scheduled_rate(tmp_path, monkeypatch):
    # The schedule rescales the momentum by old / new rate at each update: a resume that put back the
    # initial 0.1 would multiply the restored velocity by 0.1 / lr(N) (2.2 at 200,000 iterations).
    run = [
        *PAPER,
        "--batch-size",
        "16",
        "--eval-every",
        "2",
        "--accelerator",
        "cpu",
        "--output",
        str(tmp_path),
    ]
    assert main([*run, "--max-steps", "2"]) == 0
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    started = []
    train_start = GANModule.on_train_start

    def on_train_start(self):
        train_start(self)
        rates = [group["lr"] for optimizer in self.trainer.optimizers for group in optimizer.param_groups]
        started.append((self.generator.net[-1].bias.detach().clone(), rates))

    monkeypatch.setattr(GANModule, "on_train_start", on_train_start)
    assert main([*run, "--max-steps", "3", "--resume", "last"]) == 0
    ((bias, rates),) = started
    assert torch.equal(bias, saved["state_dict"]["generator.net.4.bias"])
    assert rates == [group["lr"] for state in saved["optimizer_states"] for group in state["param_groups"]]
    assert rates[0] == paper_learning_rate(1) != paper_learning_rate(0)  # set at the last update, 1


def test_discriminator_side_augmentation_feeds_ada_under_the_papers_training(tmp_path):
    run = [*PAPER, "--batch-size", "16", "--eval-every", "3", "--max-steps", "3", "--augment", "ada"]
    assert main([*run, "--accelerator", "cpu", "--output", str(tmp_path)]) == 0
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/augment_p" in header and "train/ada_rt" in header


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ("--gan-training paper", "gan_training paper needs gan_nets paper: add gan_nets paper"),
        ("--gan-nets paper --gan-training paper --lr 0.01", "drop lr or gan_training paper"),
        # The family's default value, given: still unused, still refused.
        ("--gan-nets paper --gan-training paper --lr 5e-4", "drop lr or gan_training paper"),
        ("--gan-nets paper --gan-training paper --width 64", "drop width or gan_nets paper"),
        ("--gan-nets paper --gan-training paper --gan-loss hinge", "drop gan_loss hinge"),
    ],
)
def test_what_the_papers_training_cannot_use_is_refused(options, says, capsys):
    assert main(["--model", "gan", "--data", "digits", *options.split(), "--print-config"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and says in error


def test_the_papers_training_reruns_from_its_config_file_which_holds_every_value(tmp_path, capsys):
    # config.yaml records --lr and --width as left to their defaults (null), which the run does not read;
    # one that records them at their default values (as an earlier version wrote it) re-runs too. The
    # command line's own --lr is refused.
    paper = ["--model", "gan", "--data", "digits", "--gan-nets", "paper", "--gan-training", "paper"]
    assert main([*paper, "--print-config"]) == 0
    config = tmp_path / "config.yaml"
    config.write_text(capsys.readouterr().out)
    assert "\nlr: null\n" in config.read_text() and "\nwidth: null\n" in config.read_text()
    assert main(["--config", str(config), "--print-config"]) == 0
    capsys.readouterr()
    at_defaults = tmp_path / "at_defaults.yaml"
    at_defaults.write_text(
        config.read_text()
        .replace("\nlr: null\n", "\nlr: 0.0005\n")
        .replace("\nwidth: null\n", "\nwidth: 64\n")
    )
    assert main(["--config", str(at_defaults), "--print-config"]) == 0
    assert "\nlr: null\n" in capsys.readouterr().out
    assert main(["--config", str(config), "--lr", "5e-4", "--print-config"]) == 2
    assert "drop lr or gan_training paper" in capsys.readouterr().err


def test_a_diverged_run_on_the_papers_schedule_is_told_to_start_again_not_to_lower_lr(tmp_path):
    model = GANModule((1, 16, 16), gan_nets="paper", gan_training="paper")
    assert model.lower_learning_rate() is None
    assert GANModule((1, 16, 16), gan_nets="paper").lower_learning_rate() == pytest.approx(5e-5)
    advice = resume_advice(tmp_path, 2, model.lower_learning_rate())
    assert "another seed" in advice and "lower" not in advice


def test_the_options_a_paper_run_leaves_unread_are_recorded_unset_and_not_compared():
    """config.yaml, the checkpoint's run configuration and the loggers' hyperparameters hold no learning
    rate or width for a run that reads neither: a value there would read as one the run trained with. A
    run recorded with them at their defaults is the same run, and one at another learning rate under the
    same paper training is too; the paper training itself is compared."""
    from lightning_genae.experiment.ablation.conflicts import unfinished_run_conflicts
    from lightning_genae.experiment.config import RunConfig
    from lightning_genae.experiment.resolve import resolve

    values = {"model": "gan", "data": "digits", "gan_nets": "paper", "gan_training": "paper"}
    config = resolve(RunConfig.from_dict(values)).config
    assert config.plugin_options["lr"] is None and config.plugin_options["width"] is None
    assert config.plugin_options["latent_dim"] == 32
    recorded = config.to_dict()
    assert recorded["lr"] is None and recorded["width"] is None
    assert unfinished_run_conflicts(recorded, config) == []
    at_defaults = {**recorded, "lr": 5e-4, "width": 64}
    assert unfinished_run_conflicts(at_defaults, config) == []
    adam = resolve(RunConfig.from_dict({**values, "gan_training": "adam"})).config
    assert adam.plugin_options["lr"] == 5e-4
    assert unfinished_run_conflicts(recorded, adam) == ["--gan-training adam (the run there: paper)"]

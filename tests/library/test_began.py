"""BEGAN and EBGAN (models/began.py): an autoencoder discriminator, k_t, M_global and D's reconstructions."""

import csv
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from forked import run_forked
from PIL import Image
from tiny import TINY_RUN

from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.experiment.cli import main
from lightning_genae.models import BEGANModule, ImageDiscriminator, ReconstructingDiscriminator, Sampler
from lightning_genae.models.began import ebgan_discriminator_loss, pulling_away_term, reconstruction_energy

REPO = Path(__file__).resolve().parents[2]
STEPS = 6


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def column(run_dir: Path, name: str) -> list[float]:
    return [float(row[name]) for row in metric_rows(run_dir) if row.get(name)]


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def began_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny BEGAN run on digits; read it, copy it before changing it."""
    run_dir = tmp_path_factory.mktemp("began") / "run"
    assert main(["--model", "began", *TINY_RUN, "--max-steps", str(STEPS), "--output", str(run_dir)]) == 0
    return run_dir


def test_a_run_writes_a_complete_folder_with_the_discriminator_reconstructions(began_run):
    for name in (
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
    ):
        assert (began_run / name).is_file(), name
    images = began_run / "images"
    assert (images / f"samples_step{STEPS:07d}.png").is_file()
    grid = images / f"d_reconstructions_step{STEPS:07d}.png"
    assert grid.is_file()
    # 32 validation images in rows of 8, each row shown four times (real, D(real), fake, D(fake)):
    # 16 rows of 16-pixel images with 2-pixel padding.
    assert Image.open(grid).size == (8 * 18 + 2, 16 * 18 + 2)
    summary = summary_of(began_run)
    assert summary["global_step"] == STEPS and summary["config"]["d_loss"] == "began"
    final = summary["final_metrics"]
    assert (
        final["test/fd_classifier"] > 0 and final["val/d_real_energy"] > 0 and final["test/d_real_energy"] > 0
    )


def test_k_stays_in_the_unit_interval_and_m_global_is_logged(began_run):
    k = column(began_run, "train/k")
    m_global = column(began_run, "train/m_global")
    real, fake = column(began_run, "train/d_real_energy"), column(began_run, "train/d_fake_energy")
    assert k and len(k) == len(m_global) == len(real) == len(fake)
    assert all(0.0 <= value <= 1.0 for value in k)
    # M_global = L(x) + |gamma L(x) - L(G(z))| is at least the real energy, which is positive.
    assert all(m >= r > 0 for m, r in zip(m_global, real, strict=True))


def test_k_is_clipped_at_one_and_kept_in_the_checkpoint(tmp_path):
    # An untrained generator's grey fakes reconstruct far better than digits, so gamma L(x) - L(G(z)) > 0
    # and a huge step size drives k_t past 1 at once: it must be clipped there.
    run_dir = tmp_path / "clipped"
    args = ["--model", "began", *TINY_RUN, "--began-gamma", "1", "--began-lambda-k", "1000"]
    assert main([*args, "--max-steps", "3", "--output", str(run_dir)]) == 0
    k = column(run_dir, "train/k")
    assert max(k) == 1.0 and all(0.0 <= value <= 1.0 for value in k)
    stored = RunCheckpoint.load(run_dir / "checkpoints" / "last.ckpt", "test").contents["state_dict"]["k"]
    assert stored.shape == () and 0.0 <= float(stored) <= 1.0


def test_a_checkpoint_rebuilds_the_module_with_k(began_run):
    checkpoint = RunCheckpoint.load(began_run / "checkpoints" / "last.ckpt", "test")
    model = checkpoint.restore(BEGANModule, "test")
    stored = checkpoint.contents["state_dict"]["k"]
    assert torch.equal(model.k, stored) and 0 < float(stored) <= 1
    assert isinstance(model, Sampler) and isinstance(model, ImageDiscriminator)
    assert isinstance(model, ReconstructingDiscriminator)
    samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 16, 16) and samples.abs().max() <= 1
    shown = model.discriminator_reconstructions(samples, torch.Generator().manual_seed(1))
    assert list(shown) == ["real", "real_reconstruction", "fake", "fake_reconstruction"]
    assert all(batch.shape == samples.shape for batch in shown.values())


def test_resume_last_continues_k_and_the_step_count(began_run, tmp_path, monkeypatch):
    run_dir = tmp_path / "resumed"
    shutil.copytree(began_run, run_dir)
    stored = RunCheckpoint.load(run_dir / "checkpoints" / "last.ckpt", "test").contents["state_dict"]["k"]
    k_at_start = []
    monkeypatch.setattr(BEGANModule, "on_train_start", lambda self: k_at_start.append(self.k.clone()))
    assert main(["--output", str(run_dir), "--resume", "last", "--max-steps", str(STEPS + 3)]) == 0
    assert summary_of(run_dir)["global_step"] == STEPS + 3
    # Training went on from the stored k_t, not from 0.
    assert float(stored) > 0 and k_at_start == [stored]


def test_evaluate_reproduces_the_final_metrics(began_run, tmp_path):
    out = tmp_path / "eval"
    assert main(["--evaluate", str(began_run / "checkpoints" / "last.ckpt"), "--output", str(out)]) == 0
    evaluated = json.loads((out / "eval.json").read_text())["metrics"]
    final = summary_of(began_run)["final_metrics"]
    for key in ("test/fd_classifier", "test/d_real_energy", "val/d_real_energy", "val/d_energy_train"):
        assert evaluated[key] == pytest.approx(final[key], rel=1e-5), key


@pytest.mark.slow
def test_ebgan_loss_trains_and_logs_without_moving_k(tmp_path):
    run_dir = tmp_path / "ebgan"
    args = ["--model", "began", "--d-loss", "ebgan", "--ebgan-pt", "0.5", *TINY_RUN, "--max-steps", "4"]
    assert main([*args, "--output", str(run_dir)]) == 0
    assert summary_of(run_dir)["config"]["d_loss"] == "ebgan"
    assert column(run_dir, "train/loss_d") and column(run_dir, "train/d_fake_energy")
    assert set(column(run_dir, "train/k")) == {0.0}, "k_t is BEGAN's; EBGAN never moves it"


def test_every_image_the_discriminator_sees_is_augmented_with_ae_d_and_diffaug(tmp_path, monkeypatch):
    calls = []
    original = BEGANModule.discriminator_input

    def counted(self, images):
        calls.append(images.shape[0])
        return original(self, images)

    monkeypatch.setattr(BEGANModule, "discriminator_input", counted)
    run_dir = tmp_path / "augmented"
    augment = "--augment ae-d+diffaug --augmenter-width 8 --augmenter-latent-dim 8 --augmenter-steps 10"
    args = ["--model", "began", *TINY_RUN, *augment.split(), "--max-steps", "3", "--output", str(run_dir)]
    assert main(args) == 0
    assert summary_of(run_dir)["augmentation"]["augment"] == "ae-d+diffaug"
    # Real and fake in D's step, fake in G's step, every iteration; plus the preview's one batch at start.
    assert len(calls) == 3 * 3 + 1


def test_k_moves_by_both_energies_of_the_discriminator_before_its_step(tmp_path, monkeypatch):
    # The paper's k_{t+1} = k_t + lambda_k (gamma L(x) - L(G(z))) takes both energies at D's weights of
    # step t, as its reference code does from one forward pass; L(G(z)) measured again after D's step is
    # another discriminator's. Each iteration calls `energy` on the reals and the fakes of D's step, then on
    # G's fakes: k must follow the first two calls alone.
    energies = []
    original = BEGANModule.energy

    def recorded(self, images):
        energy, codes = original(self, images)
        energies.append(energy.detach().float().mean())
        return energy, codes

    monkeypatch.setattr(BEGANModule, "energy", recorded)
    run_dir = tmp_path / "run"
    args = ["--model", "began", *TINY_RUN, "--began-gamma", "1", "--began-lambda-k", "0.5"]
    assert main([*args, "--max-steps", "3", "--output", str(run_dir)]) == 0
    assert len(energies) == 3 * 3
    k = torch.tensor(0.0)
    for step in range(3):
        real, fake_in_d_step = energies[3 * step], energies[3 * step + 1]
        k = (k + 0.5 * (real - fake_in_d_step)).clamp(0.0, 1.0)
    stored = RunCheckpoint.load(run_dir / "checkpoints" / "last.ckpt", "test").contents["state_dict"]["k"]
    assert 0.0 < float(k) < 1.0, "a k inside the interval, so that the test tells the energies apart"
    assert float(stored) == pytest.approx(float(k), rel=1e-5)
    last_fake = column(run_dir, "train/d_fake_energy")[-1]
    assert last_fake == pytest.approx(float(energies[-2]), rel=1e-5)


def test_ebgans_hinge_pushes_each_fake_below_the_margin_whatever_the_batch_mean():
    # The mean energy 0.315 is above the margin 0.3, yet three of the four fakes are below it.
    fake_energies = torch.tensor([0.02, 0.02, 0.02, 1.2], requires_grad=True)
    loss = ebgan_discriminator_loss(torch.tensor(0.1), fake_energies, margin=0.3)
    assert float(loss) == pytest.approx(0.1 + 3 * 0.28 / 4)
    loss.backward()
    assert fake_energies.grad.tolist() == pytest.approx([-0.25, -0.25, -0.25, 0.0])


def test_pulling_away_term_is_zero_for_orthogonal_codes_and_one_for_identical_ones():
    orthogonal = torch.eye(4) * torch.tensor([[1.0], [2.0], [0.5], [3.0]])
    assert float(pulling_away_term(orthogonal)) == pytest.approx(0.0, abs=1e-7)
    identical = torch.tensor([[1.0, -2.0, 0.5]]).repeat(5, 1)
    assert float(pulling_away_term(identical)) == pytest.approx(1.0, abs=1e-6)
    between = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert float(pulling_away_term(between)) == pytest.approx(0.5, abs=1e-6)


def test_energy_is_the_per_image_mean_absolute_error():
    images = torch.zeros(2, 1, 4, 4)
    recon = images.clone()
    recon[1] += 0.5
    assert torch.allclose(reconstruction_energy(recon, images), torch.tensor([0.0, 0.5]))


BAD_OPTIONS = {
    "zero gamma": (["--began-gamma", "0"], "--began-gamma must lie in (0, 1]"),
    "gamma above one": (["--began-gamma", "1.5"], "--began-gamma must lie in (0, 1]"),
    "nan gamma": (["--began-gamma", "nan"], "--began-gamma"),
    "negative lambda": (["--began-lambda-k", "-0.1"], "--began-lambda-k"),
    "negative margin": (["--d-loss", "ebgan", "--ebgan-margin", "-1"], "--ebgan-margin"),
    "negative pt": (["--d-loss", "ebgan", "--ebgan-pt", "-0.1"], "--ebgan-pt"),
    "unknown loss": (["--d-loss", "wgan"], "--d-loss"),
    "margin without ebgan": (["--ebgan-margin", "0.5"], "d_loss ebgan"),
    "gamma with ebgan": (["--d-loss", "ebgan", "--began-gamma", "0.7"], "d_loss began"),
    "margin at its default without ebgan": (["--ebgan-margin", "0.3"], "d_loss ebgan"),
    "skips on the dcgan nets": (
        ["--began-nets", "dcgan", "--began-skip-connections"],
        "--began-skip-connections changes the paper's nets",
    ),
}


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_bad_option_values_exit_2_with_one_line(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args, expected = BAD_OPTIONS[name]
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(["--model", "began", *args, "--max-steps", "2"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_began_trains_under_ddp_on_two_cpu_processes(tmp_path):
    """Two gloo processes with DiffAugment: no unused-parameter error, k_t moved and checkpointed."""
    run_dir = tmp_path / "ddp"
    command = [sys.executable, str(Path(__file__).resolve().parents[2] / "run.py"), "--model", "began"]
    command += [*TINY_RUN, "--augment", "diffaug", "--accelerator", "cpu", "--devices", "2"]
    command += ["--strategy", "ddp", "--max-steps", "3", "--output", str(run_dir)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = summary_of(run_dir)
    assert summary["world_size"] == 2 and summary["global_step"] == 3
    stored = RunCheckpoint.load(run_dir / "checkpoints" / "last.ckpt", "test").contents["state_dict"]["k"]
    assert 0 < float(stored) <= 1
    assert float(stored) == pytest.approx(column(run_dir, "train/k")[-1], abs=1e-7)


def test_the_paper_nets_have_no_batch_norm_elu_and_nearest_upsampling_and_give_the_image_shape():
    from torch import nn

    from lightning_genae.nets.began import BEGANAutoencoder, BEGANDecoder

    for shape in [(1, 16, 16), (1, 28, 28), (3, 32, 32)]:
        generator, autoencoder = BEGANDecoder(shape, 8, width=4), BEGANAutoencoder(shape, 8, width=4)
        modules = [*generator.modules(), *autoencoder.modules()]
        assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.ConvTranspose2d)) for m in modules)
        assert any(isinstance(m, nn.ELU) for m in modules)
        upsamplings = [m for m in generator.modules() if isinstance(m, nn.Upsample)]
        assert upsamplings and all(m.mode == "nearest" and m.scale_factor == 2 for m in upsamplings)
        convs = [m for m in modules if isinstance(m, nn.Conv2d)]
        assert all(m.kernel_size == (3, 3) for m in convs)
        assert generator(torch.rand(2, 8) * 2 - 1).shape == (2, *shape)
        reconstruction, code = autoencoder(torch.rand(2, *shape) * 2 - 1)
        assert reconstruction.shape == (2, *shape) and code.shape == (2, 8)
        # The encoder's channels grow linearly with the scale (n, 2n, 3n): 3 scales at 28 and 32 px.
        widths = {m.out_channels for m in autoencoder.encoder.modules() if isinstance(m, nn.Conv2d)}
        assert max(widths) == 4 * (len(upsamplings) + 1)


def test_skip_connections_feed_the_base_map_to_every_scale():
    """The paper's skip connections (section 3.5.1): h0 reaches every scale, even with the main path cut."""
    from lightning_genae.nets.began import BEGANDecoder

    torch.manual_seed(0)
    z = torch.rand(4, 8) * 2 - 1
    for skip in (False, True):
        decoder = BEGANDecoder((1, 28, 28), 8, width=4, skip_connections=skip)
        first_inputs = [m.in_channels for m in decoder.blocks if isinstance(m, torch.nn.Conv2d)]
        # Two upsamplings at 28 px: the scale after each reads 2n channels with skips, n without.
        assert first_inputs == ([4, 4, 8, 4, 8, 4, 4] if skip else [4] * 7)
        with torch.no_grad():
            for conv in [m for m in decoder.blocks if isinstance(m, torch.nn.Conv2d)][:2]:
                conv.weight.zero_()
                conv.bias.zero_()
            images = decoder(z)
        assert images.shape == (4, 1, 28, 28)
        spread = float(images.std(0).max())
        # With the first scale's convolutions zeroed the main path carries no trace of z.
        assert (spread > 1e-4) if skip else (spread < 1e-7)
    module = BEGANModule((1, 16, 16), latent_dim=8, width=4, began_skip_connections=True)
    assert module.generator.skip_connections and module.discriminator.decoder.skip_connections


def test_began_draws_z_uniformly_in_minus_one_one_and_shows_images_in_range():
    module = BEGANModule((1, 16, 16), latent_dim=8, width=4)
    z = module.prior_noise(4000, torch.Generator().manual_seed(0))
    assert z.min() >= -1 and z.max() <= 1 and abs(float(z.mean())) < 0.02
    assert float(z.var()) == pytest.approx(1 / 3, rel=0.05), "U(-1, 1) has variance 1/3"
    with torch.no_grad():
        module.generator.blocks[-1].bias.fill_(5.0)  # an unbounded output far outside the image range
        samples = module.sample(3, torch.Generator().manual_seed(0))
    assert samples.max() <= 1 and samples.min() >= -1
    shared = BEGANModule((1, 16, 16), latent_dim=8, width=4, began_nets="dcgan")
    normal = shared.prior_noise(4000, torch.Generator().manual_seed(0))
    assert float(normal.var()) == pytest.approx(1, rel=0.1)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in shared.discriminator.modules())


def test_a_fresh_paper_generator_gives_different_images_for_different_z():
    """At PyTorch's default scale the unnormalised ELU stack draws nearly one image for every z."""
    module = BEGANModule((1, 28, 28), latent_dim=16, width=8)
    with torch.no_grad():
        images = module.generator(module.prior_noise(64, torch.Generator().manual_seed(0)))
    assert float(images.std(0).mean()) > 0.03


@pytest.mark.slow
def test_reference_update_probe_trains_both_networks_from_one_forward(tmp_path: Path) -> None:
    """bench/probe_began_reference.py: the reference code's Adam and simultaneous update, through run.py."""
    run_dir = tmp_path / "run"
    arguments = ["--beta1", "0.9", "--simultaneous", "--",
                 "--model", "began", *TINY_RUN, "--max-steps", "3", "--output", str(run_dir)]  # fmt: skip
    probe = run_forked(REPO / "bench" / "probe_began_reference.py", arguments, cwd=REPO)
    assert probe.returncode == 0, probe.stderr
    header = (run_dir / "config.yaml").read_text().splitlines()[0]
    assert (
        "re-run with: python bench/probe_began_reference.py --beta1 0.9 --simultaneous -- --model began"
        in header
    )
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for optimizer in checkpoint["optimizer_states"]:
        assert optimizer["param_groups"][0]["betas"][0] == 0.9
        assert all(state["step"] == 3 for state in optimizer["state"].values())
    assert column(run_dir, "train/k")[-1] > 0


def probe_nets(tmp_path: Path, name: str, probe: list[str], extra: list[str]) -> dict[str, torch.Tensor]:
    """Run bench/probe_began_nets.py for 2 iterations; the last checkpoint's weights."""
    run_dir = tmp_path / name
    arguments = [*probe, "--", "--model", "began", *TINY_RUN, "--max-steps", "2", "--output", str(run_dir),
                 *extra]  # fmt: skip
    result = run_forked(REPO / "bench" / "probe_began_nets.py", arguments, cwd=REPO)
    assert result.returncode == 0, result.stderr
    header = (run_dir / "config.yaml").read_text().splitlines()[0]
    assert f"re-run with: {shlex.join(['python', 'bench/probe_began_nets.py', *arguments])}" in header, header
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return checkpoint["state_dict"]


def normalised(weights: dict[str, torch.Tensor], prefix: str) -> list[str]:
    """The batch norm layers (by their running means) under `prefix`."""
    return [key for key in weights if key.startswith(prefix) and key.endswith("running_mean")]


@pytest.fixture(scope="module")
def paper_nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The probe run with no change: the paper's nets as run.py trains them."""
    return probe_nets(tmp_path_factory.mktemp("probe"), "paper-nets", [], [])


@pytest.mark.slow
def test_nets_probe_adds_and_drops_exactly_the_batch_norm_it_names(tmp_path: Path) -> None:
    """bench/probe_began_nets.py changes the nets it names, in the run that trains and checkpoints them."""
    paper = probe_nets(
        tmp_path, "paper", ["--batch-norm", "discriminator", "--code-batch-norm", "--tanh"], []
    )
    assert normalised(paper, "generator.") == []
    assert normalised(paper, "discriminator.encoder.") and normalised(paper, "discriminator.decoder.blocks.")
    assert normalised(paper, "discriminator.decoder.project.") == [
        "discriminator.decoder.project.1.running_mean"
    ]
    dcgan = probe_nets(
        tmp_path, "dcgan", ["--drop-batch-norm", "discriminator-code"], ["--began-nets", "dcgan"]
    )
    assert normalised(dcgan, "generator.") and normalised(dcgan, "discriminator.encoder.")
    assert normalised(dcgan, "discriminator.decoder.project.") == []
    assert normalised(dcgan, "discriminator.decoder.blocks.")


@pytest.mark.slow
def test_nets_probe_swaps_in_one_dcgan_net_and_keeps_the_papers_other(
    tmp_path: Path, paper_nets: dict[str, torch.Tensor]
) -> None:
    """`--dcgan-part generator`: G is the DCGAN nets' (batch norm, transposed convolutions), D the paper's."""
    swapped = probe_nets(tmp_path, "dcgan-g", ["--dcgan-part", "generator"], [])
    paper = paper_nets
    assert normalised(swapped, "generator.") and normalised(swapped, "discriminator.") == []
    assert normalised(paper, "generator.") == []
    assert {key for key in swapped if key.startswith("discriminator.")} == {
        key for key in paper if key.startswith("discriminator.")
    }


PROBE_REFUSALS = {
    "changes on the dcgan nets, = spelling": (
        ["--vanishing-residual", "4", "--", "--model=began", "--began-nets=dcgan"],
        "--vanishing-residual change the paper's nets",
    ),
    "negative carry steps": (["--vanishing-residual", "-5", "--", "--model", "began"], "positive"),
    "dcgan part with skips": (
        ["--dcgan-part", "generator", "--", "--model", "began", "--began-skip-connections"],
        "--began-skip-connections",
    ),
    "no began model": (["--tanh", "--", "--model", "gan"], "--model began"),
}


@pytest.mark.parametrize("name", list(PROBE_REFUSALS))
def test_nets_probe_refuses_changes_it_cannot_make_before_training(name: str, tmp_path: Path) -> None:
    probe, expected = PROBE_REFUSALS[name]
    arguments = [*probe, "--output", str(tmp_path / "run")]
    result = run_forked(REPO / "bench" / "probe_began_nets.py", arguments, cwd=REPO)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_nets_probe_wraps_exactly_the_shape_keeping_convolutions_in_a_carry(
    tmp_path: Path, paper_nets: dict[str, torch.Tensor]
) -> None:
    """`--vanishing-residual`: every 3x3 convolution that keeps its input's shape is carried, no other."""
    carried = probe_nets(tmp_path, "carried", ["--vanishing-residual", "4"], [])
    paper = paper_nets
    kernels = {key: weight.shape for key, weight in carried.items() if weight.dim() == 4}
    wrapped = {key for key in kernels if ".layer.0." in key}
    assert all(kernels[key][0] == kernels[key][1] for key in wrapped)
    # 16 px, three scales: G's six and D's decoder's six same-width convolutions, and the encoder's
    # four that keep their width (the first of scale 0 and the second of each scale), not its stride-2 ones.
    assert len([key for key in wrapped if key.endswith("weight")]) == 6 + 6 + 4
    assert len(carried) == len(paper)


def test_natural_patches_are_a_labelled_folder_the_folder_dataset_reads(tmp_path: Path) -> None:
    """bench/natural_patches.py: seeded crops of scikit-learn's two photographs, one class per photograph,
    written only into a folder of its own."""
    from lightning_genae.datamodules.folder import scan_folder

    script = REPO / "bench" / "natural_patches.py"
    output = tmp_path / "patches"
    arguments = ["--output", str(output), "--per-image", "3", "--crop", "20"]
    assert run_forked(script, arguments, cwd=REPO).returncode == 0
    scan = scan_folder(output)
    assert scan.classes == ["china", "flower"] and scan.labels.tolist() == [0, 0, 0, 1, 1, 1]
    crops = [Image.open(path) for path in scan.paths]
    assert {(crop.size, crop.mode) for crop in crops} == {((20, 20), "RGB")}
    # Crops at seeded positions: the same seed writes the same files.
    again = tmp_path / "again"
    assert run_forked(script, ["--output", str(again), *arguments[2:]], cwd=REPO).returncode == 0
    assert all((again / p.relative_to(output)).read_bytes() == p.read_bytes() for p in scan.paths)
    refused = run_forked(script, arguments, cwd=REPO)
    assert refused.returncode == 2 and "exists; pass a new --output folder" in refused.stderr

"""Benchmark: each family's training step through `run.py` against the peer a user would pick instead.

Both sides train the same networks, at the same batch size, in one process with one torch thread; the
sides alternate block by block (`--block` steps of ours, then `--block` of the peer, `--repeats` times), so
a load that comes and goes on a shared machine affects both alike. Every step is timed on this process's
CPU clock (`--device cuda`: on the wall clock, the GPU synchronised at each mark, so a step's time includes
its kernels), and each side's figure is the median and the 90th percentile of its per-step times.

The peers:
- `ae`, `vae`: pythae 0.1.2 (`pip install pythae`; not a dependency of lightning-genae): its AE/VAE with
  this run's own encoder and decoder (deep copies, wrapped in pythae's BaseEncoder/BaseDecoder), trained
  by its BaseTrainer's `train_step` (its DataLoader, forward, loss, backward and optimizer step).
- `aae`: pythae's Adversarial_AE on the same encoder, decoder and latent discriminator. It is a different
  algorithm (one forward pass, a weighted sum of reconstruction and adversarial losses, two updates; ours
  runs the paper's three phases, three updates), so its row compares a step of each as users get them.
- `vaegan`: pythae's VAEGAN on the same encoder, decoder and image discriminator (its feature layer is the
  one ours reconstructs in), trained by its CoupledOptimizerAdversarialTrainer: one forward pass and three
  backward passes, one per network's loss, at its default margin (an update of D or the decoder is skipped
  when D is far from equilibrium). Ours runs three phases, each with its own forward pass at the weights
  the previous phase left. The compared value is the pixel MSE of the reconstructions.
- `gan`, `began`: the fastest loop a user writes by hand: batches drawn by random index from one tensor of
  the run's training images, the family's losses and updates, copies of the run's own networks and Adam
  settings.
- `rae`: a plain loop of the same GRU encoder and decoder: full teacher forcing (ours is run with it too),
  MSE, Adam.

"ours" is `lightning_genae.experiment.cli.main` with the run's usual callbacks, loggers and loader;
evaluation, image grids and checkpoints are pushed past the end (their cost is a cadence: `bench/eval.py`),
and the test split is left out (`--no-test-split`): nothing here reads its evaluation. The final losses
of both sides (mean over each side's last block, in the same units) are printed to show the work agrees.

    python bench/peers.py [--families ae,vae,aae,vaegan,gan,began,rae] [--block 20] [--repeats 6]
                          [--device cpu|cuda]

Each peer's loop is written out beside ours in this one file, so what the peer does per step can be read
in one place.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import NEVER, added_callback  # noqa: E402

PYTHAE_FAMILIES = ("ae", "vae", "aae", "vaegan")
# The training value compared between the sides, and its scale to the peer's units: the discriminator's
# loss of the GANs, the reconstruction error per value (images in [0, 1]: ours logs MSE on [-1, 1], 4x
# that) of the autoencoders and the rae, the negative ELBO per image of the VAE.
COMPARED_LOSS = {
    "gan": ("train/loss_d", 1.0),
    "began": ("train/loss_d", 1.0),
    "rae": ("train/mse", 1.0),
    "ae": ("train/mse", 0.25),
    "aae": ("train/mse", 0.25),
    "vaegan": ("train/mse", 0.25),
    "vae": ("train/loss", 1.0),
}
DATA = {"rae": "sines"}
# Family options that make both sides the same model (a Bernoulli VAE, as the peers' is).
FAMILY_ARGS = {
    "vae": ("--recon-loss", "bce"),
    "ae": ("--recon-loss", "mse"),
    "aae": ("--recon-loss", "mse"),
    # Full teacher forcing throughout on both sides: the decoder runs as one call over the sequence.
    "rae": ("--teacher-forcing", "1", "--tf-decay-steps", "0"),
}


def cpu_clock() -> float:
    return time.process_time()


def device_clock() -> float:
    """Wall-clock seconds once the GPU has finished what was queued: a step's kernels count in its time."""
    torch.cuda.synchronize()
    return time.perf_counter()


# What every mark reads; `main` picks the device's.
clock = cpu_clock


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# ---- the peers ------------------------------------------------------------------------------------------


class Peer:
    """A side that runs `steps` training steps and reports each step's CPU seconds and the mean loss."""

    name = "peer"

    def run(self, steps: int) -> tuple[list[float], float]:
        raise NotImplementedError


class HandLoop(Peer):
    """Steps of a hand-written `step(batch) -> loss` over random-index batches of one tensor."""

    name = "hand-written loop"

    def __init__(self, step: Callable[[Tensor], Tensor], pool: Tensor, batch: int) -> None:
        self.step, self.pool, self.batch = step, pool, batch

    def run(self, steps: int) -> tuple[list[float], float]:
        times, losses = [], []
        for _ in range(steps):
            started = clock()
            loss = self.step(self.pool[torch.randint(len(self.pool), (self.batch,), device=self.pool.device)])
            losses.append(float(loss))
            times.append(clock() - started)
        return times, statistics.fmean(losses)


def adam_like(optimizer: torch.optim.Optimizer, parameters: Any) -> torch.optim.Optimizer:
    """A new optimizer of the run's class with the run's settings (lr, betas, fused) over `parameters`."""
    group = optimizer.param_groups[0]
    settings = {key: group[key] for key in ("lr", "betas", "eps", "weight_decay", "fused") if key in group}
    return optimizer.__class__(parameters, **settings)


def gan_peer(model: Any, pool: Tensor, batch: int) -> Peer:
    from lightning_genae.models.gan import discriminator_loss, generator_loss

    generator, discriminator = copy.deepcopy(model.generator), copy.deepcopy(model.discriminator)
    opt_d, opt_g = (
        adam_like(optimizer, net.parameters())
        for optimizer, net in zip(model.trainer.optimizers, (discriminator, generator), strict=True)
    )
    kind, latent = model.options.gan_loss, model.latent_dim

    def step(real: Tensor) -> Tensor:
        n = real.size(0)
        with torch.no_grad():
            fake = generator(torch.randn(n, latent, device=real.device))
        loss_d = discriminator_loss(discriminator(real), discriminator(fake), kind)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        discriminator.requires_grad_(False)
        loss_g = generator_loss(discriminator(generator(torch.randn(n, latent, device=real.device))), kind)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        discriminator.requires_grad_(True)
        return loss_d.detach()

    return HandLoop(step, pool, batch)


def began_peer(model: Any, pool: Tensor, batch: int) -> Peer:
    from lightning_genae.models.began import reconstruction_energy

    generator, discriminator = copy.deepcopy(model.generator), copy.deepcopy(model.discriminator)
    opt_d, opt_g = (
        adam_like(optimizer, net.parameters())
        for optimizer, net in zip(model.trainer.optimizers, (discriminator, generator), strict=True)
    )
    gamma, lambda_k = model.options.began_gamma, model.options.began_lambda_k
    state = {"k": 0.0}

    def energy(images: Tensor) -> Tensor:
        reconstructions, _ = discriminator(images)
        return reconstruction_energy(reconstructions, images).mean()

    def step(real: Tensor) -> Tensor:
        n = real.size(0)
        with torch.no_grad():
            fake = generator(model.training_noise(n))
        real_energy, fake_energy = energy(real), energy(fake)
        loss_d = real_energy - state["k"] * fake_energy
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        discriminator.requires_grad_(False)
        # The run's own prior (U(-1, 1) with BEGAN's nets), drawn as its training step draws it.
        loss_g = energy(generator(model.training_noise(n)))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        discriminator.requires_grad_(True)
        balance = gamma * real_energy.item() - fake_energy.item()
        state["k"] = min(max(state["k"] + lambda_k * balance, 0.0), 1.0)
        return loss_d.detach()

    return HandLoop(step, pool, batch)


def rae_peer(model: Any, pool: Tensor, batch: int) -> Peer:
    encoder, decoder = copy.deepcopy(model.encoder), copy.deepcopy(model.decoder)
    (optimizer,) = model.trainer.optimizers
    opt = adam_like(optimizer, [*encoder.parameters(), *decoder.parameters()])
    latent = model.latent_dim

    def step(series: Tensor) -> Tensor:
        codes = encoder(series)[:, :latent]
        loss = F.mse_loss(decoder(codes, targets=series, teacher_forcing=1.0), series)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return HandLoop(step, pool, batch)


class PythaePeer(Peer):
    """pythae's model and BaseTrainer (or AdversarialTrainer); `run(steps)`: one epoch of `steps` batches."""

    name = "pythae 0.1.2"

    def __init__(
        self, family: str, model: Any, pool01: Tensor, batch: int, steps: int, scratch: Path
    ) -> None:
        from pythae.data.datasets import BaseDataset
        from pythae.models import (
            AE,
            VAE,
            VAEGAN,
            Adversarial_AE,
            Adversarial_AE_Config,
            AEConfig,
            VAEConfig,
            VAEGANConfig,
        )
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseDiscriminator, BaseEncoder
        from pythae.trainers import (
            AdversarialTrainer,
            AdversarialTrainerConfig,
            BaseTrainer,
            BaseTrainerConfig,
            CoupledOptimizerAdversarialTrainer,
            CoupledOptimizerAdversarialTrainerConfig,
        )

        latent = model.latent_dim
        variational = family in ("vae", "vaegan")
        dataset = BaseDataset(pool01, torch.zeros(len(pool01)))
        sigmoid = getattr(model.options, "recon_loss", None) == "bce"

        class Encoder(BaseEncoder):
            def __init__(self, net: nn.Module) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: Tensor) -> Any:
                out = self.net(x)
                if variational:
                    return ModelOutput(embedding=out[:, :latent], log_covariance=out[:, latent:])
                # pythae's AAE reads a log-variance; a deterministic encoder has none (see its config).
                return ModelOutput(embedding=out, log_covariance=torch.zeros_like(out))

        class Decoder(BaseDecoder):
            def __init__(self, net: nn.Module) -> None:
                super().__init__()
                self.net = net

            def forward(self, z: Tensor) -> Any:
                out = self.net(z)
                return ModelOutput(reconstruction=torch.sigmoid(out) if sigmoid else out)

        class Discriminator(BaseDiscriminator):
            def __init__(self, net: nn.Module) -> None:
                super().__init__()
                self.net = net

            def forward(self, z: Tensor) -> Any:
                return ModelOutput(embedding=torch.sigmoid(self.net(z, None)))

        class ImageDiscriminator(BaseDiscriminator):
            """Our image discriminator: its score, and its feature layer as pythae's layer 1."""

            depth = 1

            def __init__(self, net: nn.Module) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: Tensor, output_layer_levels: list[int] | None = None) -> Any:
                features = self.net.features(x)
                output = ModelOutput(embedding=torch.sigmoid(self.net.logits_of_features(features)))
                for level in output_layer_levels or ():
                    output[f"embedding_layer_{level}"] = features
                return output

        shape = tuple(model.image_shape)
        encoder, decoder = Encoder(copy.deepcopy(model.encoder)), Decoder(copy.deepcopy(model.decoder))
        loss = "bce" if sigmoid else "mse"
        lr = model.options.lr
        # One epoch over the block's batches, on the run's device, into the scratch folder: every trainer
        # alike.
        run_settings = {
            "output_dir": str(scratch),
            "per_device_train_batch_size": batch,
            "num_epochs": 1,
            "no_cuda": model.device.type != "cuda",
        }
        if family == "aae":
            config = Adversarial_AE_Config(
                input_dim=shape, latent_dim=latent, reconstruction_loss=loss, deterministic_posterior=True
            )
            discriminator = Discriminator(copy.deepcopy(model.latent_discriminator))
            self.model = Adversarial_AE(config, encoder=encoder, decoder=decoder, discriminator=discriminator)
            training = AdversarialTrainerConfig(
                **run_settings,
                autoencoder_learning_rate=lr,
                discriminator_learning_rate=lr,
            )
            self.trainer = AdversarialTrainer(self.model, train_dataset=dataset, training_config=training)
        elif family == "vaegan":
            config = VAEGANConfig(input_dim=shape, latent_dim=latent, reconstruction_layer=1)
            discriminator = ImageDiscriminator(copy.deepcopy(model.discriminator))
            self.model = VAEGAN(config, encoder=encoder, decoder=decoder, discriminator=discriminator)
            # Ours: Adam with DCGAN's betas for all three networks.
            betas = {"betas": (0.5, 0.999)}
            training = CoupledOptimizerAdversarialTrainerConfig(
                **run_settings,
                encoder_learning_rate=lr,
                decoder_learning_rate=lr,
                discriminator_learning_rate=lr,
                encoder_optimizer_params=betas,
                decoder_optimizer_params=betas,
                discriminator_optimizer_params=betas,
            )
            self.trainer = CoupledOptimizerAdversarialTrainer(
                self.model, train_dataset=dataset, training_config=training
            )
        else:
            config = (VAEConfig if variational else AEConfig)(
                input_dim=shape, latent_dim=latent, **({"reconstruction_loss": loss} if variational else {})
            )
            self.model = (VAE if variational else AE)(config, encoder=encoder, decoder=decoder)
            training = BaseTrainerConfig(
                **run_settings,
                learning_rate=lr,
            )
            self.trainer = BaseTrainer(self.model, train_dataset=dataset, training_config=training)
        # What its train() does before the first epoch: optimizers, output folder, callbacks.
        self.trainer.prepare_training()
        self.family, self.batch, self.pixels = family, batch, pool01[0].numel()
        # One epoch is one block: the dataset holds exactly `steps` batches.
        assert len(pool01) == steps * batch
        self._marks: list[float] = []
        self._losses: list[float] = []
        forward = self.model.forward

        def marked(*args: Any, **kwargs: Any) -> Any:
            self._marks.append(clock())
            output = forward(*args, **kwargs)
            self._losses.append(self._compared_loss(output, args[0]["data"], loss))
            return output

        self.model.forward = marked

    def _compared_loss(self, output: Any, images: Tensor, loss: str) -> float:
        """The VAE's loss per image, as ours; the AE's (its only loss) and the AAE's reconstruction term,
        which pythae halves for mse, as sums over pixels; the VAE-GAN's pixel MSE (its own losses are in
        the discriminator's feature space), summed over pixels too."""
        if self.family == "vaegan":
            return float(F.mse_loss(output.recon_x, images)) * self.pixels
        if self.family in ("vae", "ae"):
            return float(output.loss)
        return float(output.recon_loss.mean()) * (2 if loss == "mse" else 1)

    def run(self, steps: int) -> tuple[list[float], float]:
        self._marks, self._losses = [], []
        self.trainer.train_step(epoch=1)
        marks = [*self._marks, clock()]
        # The VAE's loss is per image, as ours; the others' reconstruction error sums over pixels.
        per_value = 1 if self.family == "vae" else self.pixels
        return [b - a for a, b in zip(marks, marks[1:], strict=False)], statistics.fmean(
            self._losses
        ) / per_value


# ---- ours and the alternation -------------------------------------------------------------------------


class Alternation:
    """A Lightning callback: times each of our iterations, and after every `block` runs the peer's block."""

    def __init__(self, make_peer: Callable[[Any], Peer], warmup: int, block: int) -> None:
        from pytorch_lightning.callbacks import Callback

        self.make_peer, self.warmup, self.block = make_peer, warmup, block
        self.ours_ms: list[float] = []
        self.peer_ms: list[float] = []
        self.ours_loss: list[float] = []
        self.peer_loss = float("nan")
        self.peer: Peer | None = None
        self._last = 0.0
        outer = self

        class _Hook(Callback):
            def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, *args: Any) -> None:
                outer.after_iteration(trainer, pl_module, outputs)

        self.callback = _Hook()

    def after_iteration(self, trainer: Any, pl_module: Any, outputs: Any) -> None:
        now = clock()
        done = pl_module.iteration - self.warmup
        if done > 0:
            self.ours_ms.append((now - self._last) * 1000)
            loss = trainer.callback_metrics.get(self.loss_key)
            if done > max(0, self._total - self.block) and loss is not None:
                self.ours_loss.append(float(loss) * self.loss_scale)
        if done >= 0 and done % self.block == 0:
            if self.peer is None:
                self.peer = self.make_peer(pl_module)
                self.peer.run(self.block)  # the peer's warm-up
            else:
                times, self.peer_loss = self.peer.run(self.block)
                self.peer_ms += [value * 1000 for value in times]
        self._last = clock()

    _total = 0
    loss_key = "train/loss"
    loss_scale = 1.0


def measure(family: str, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    from lightning_genae.experiment.cli import main

    data = DATA.get(family, args.data)
    iterations = args.warmup + args.block * args.repeats

    def make_peer(model: Any) -> Peer:
        datamodule = model.trainer.datamodule
        stored, _ = datamodule.split_tensors("train")
        pool = datamodule.to_model_range(stored[: max(4096, args.batch)]).to(model.device)
        if family in PYTHAE_FAMILIES:
            count = args.block * args.batch
            pool01 = ((pool[:count].cpu() + 1) / 2).contiguous()  # pythae moves its batches itself
            return PythaePeer(family, model, pool01, args.batch, args.block, scratch / f"pythae-{family}")
        return {"gan": gan_peer, "began": began_peer, "rae": rae_peer}[family](model, pool, args.batch)

    timer = Alternation(make_peer, args.warmup, args.block)
    timer._total = args.block * args.repeats
    timer.loss_key, timer.loss_scale = COMPARED_LOSS[family]
    argv = [
        *("--model", family, "--data", data, "--max-steps", str(iterations), "--batch-size", str(args.batch)),
        *("--eval-every", str(NEVER), "--image-every", str(NEVER), "--ckpt-every", str(NEVER)),
        *("--eval-samples", "256", "--no-test-split", "--output", str(scratch / family), "--overwrite"),
        *("--accelerator", "gpu" if args.device == "cuda" else "cpu", "--devices", "1"),
        *FAMILY_ARGS.get(family, ()),
    ]
    with added_callback(timer.callback):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"run.py {' '.join(argv)} failed with exit code {code}")
    assert timer.peer is not None
    ours, peer = timer.ours_ms, timer.peer_ms
    return {
        "family": family,
        "peer": timer.peer.name,
        "ours_median_ms": round(statistics.median(ours), 2),
        "ours_p90_ms": round(percentile(ours, 0.9), 2),
        "peer_median_ms": round(statistics.median(peer), 2),
        "peer_p90_ms": round(percentile(peer, 0.9), 2),
        "ratio": round(statistics.median(ours) / statistics.median(peer), 3),
        "ours_final_loss": round(statistics.fmean(timer.ours_loss), 4) if timer.ours_loss else None,
        "peer_final_loss": round(timer.peer_loss, 4),
        "steps_each": len(ours),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default="ae,vae,aae,vaegan,gan,began,rae")
    parser.add_argument("--data", default="mnist", help="image data of the image families (rae: sines)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--json", default="bench/peers.json")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both sides train")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        message = "--device cuda: no CUDA device is visible to torch; run on a GPU machine or drop it"
        print(message, file=sys.stderr)
        raise SystemExit(2)
    global clock
    clock = device_clock if args.device == "cuda" else cpu_clock
    torch.set_num_threads(1)
    families = args.families.split(",")
    if any(family in PYTHAE_FAMILIES for family in families) and importlib.util.find_spec("pythae") is None:
        print(
            f"pythae is not installed: leaving out {', '.join(f for f in families if f in PYTHAE_FAMILIES)} "
            "(pip install pythae to compare with it)"
        )
        families = [family for family in families if family not in PYTHAE_FAMILIES]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for index, family in enumerate(families, start=1):
            print(
                f"[{index}/{len(families)}] {family}: {args.warmup} warm-up + {args.repeats} x {args.block} "
                "steps per side, alternating",
                flush=True,
            )
            rows.append(measure(family, args, Path(scratch)))
            Path(args.json).write_text(
                json.dumps(
                    {
                        "machine": platform.processor() or platform.machine(),
                        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                        "torch": torch.__version__,
                        "threads": 1,
                        "batch": args.batch,
                        "rows": rows,
                    },
                    indent=2,
                )
                + "\n"
            )
    print(
        f"\n{'family':7}{'peer':20}{'ours ms (p90)':>16}{'peer ms (p90)':>16}{'ratio':>7}"
        f"{'final loss ours / peer':>26}"
    )
    for row in rows:
        losses = f"{row['ours_final_loss']} / {row['peer_final_loss']}"
        print(
            f"{row['family']:7}{row['peer']:20}"
            f"{row['ours_median_ms']:>8.1f} ({row['ours_p90_ms']:>5.1f})"
            f"{row['peer_median_ms']:>8.1f} ({row['peer_p90_ms']:>5.1f})"
            f"{row['ratio']:>7.3f}{losses:>26}"
        )
    print(f"ratio: ours over the peer's median ms per step (below 1: ours faster); wrote {args.json}")


if __name__ == "__main__":
    main()

"""Diagnostic: BEGAN written out in plain PyTorch, apart from the framework, on the same digits.

Nothing of `--model began` is used here. The networks, their initialisation, the energy, the k_t control
and the update are written from the paper (Berthelot et al. 2017, sections 3.3-3.5) and its reference
implementation (carpedm20/BEGAN-tensorflow, models.py and trainer.py):

- the generator and D's decoder: a linear layer from the h-dimensional code to an n-channel 8x8 map, then
  per scale two 3x3 convolutions with ELU and a nearest-neighbour 2x upsampling between scales, and a 3x3
  convolution to the image with no activation; a 16 px image has two scales, as the reference's
  `repeat_num = log2(16) - 2` gives;
- D's encoder: a 3x3 convolution with ELU, then per scale two 3x3 convolutions with ELU (n, 2n channels)
  and, between scales, a stride-2 3x3 convolution with ELU, then a linear layer to the h-dimensional code;
- Glorot-uniform weights and zero biases (TensorFlow-slim's defaults), z ~ U(-1, 1), images in [-1, 1];
- the energy L(v) = mean |v - D(v)| over pixels; D minimises L(x) - k_t L(G(z)), G minimises L(G(z));
  k_t += lambda_k (gamma L(x) - L(G(z))), clipped to [0, 1], after both updates;
- one forward pass of fakes and reals per iteration, whose two losses move both networks at once, with
  Adam (`--beta1`: the paper's 0.5 by default; the reference's optimizer took TensorFlow's 0.9).

The framework gives only the data (the digits' training split as `--data digits` reads it) and the scoring
of the final samples (`lightning_genae.score_images` against the test split, in the shipped classifier's
features, as a run's test metrics are). If this loop trains where `--model began` collapses, the cause is
in the framework; if it collapses the same way, it is not.

    python bench/probe_began_standalone.py [--seeds 0 1 2] [--steps 3000] [--width 32] [--latent-dim 32]
        [--batch-size 16] [--gamma 0.5] [--lambda-k 0.001] [--lr 1e-4] [--beta1 0.5] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.utils import save_image

from lightning_genae import score_images
from lightning_genae.datamodules import build_datamodule
from lightning_genae.spread import mean_std

BASE = 8  # the reference's decoders start from an 8x8 map


def conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class Decoder(nn.Module):
    """Code -> image: the generator, and the second half of D."""

    def __init__(self, code: int, width: int, channels: int, scales: int) -> None:
        super().__init__()
        self.width = width
        self.linear = nn.Linear(code, width * BASE * BASE)
        layers: list[nn.Module] = []
        for scale in range(scales):
            layers += [conv(width, width), nn.ELU(), conv(width, width), nn.ELU()]
            if scale < scales - 1:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers.append(conv(width, channels))
        self.body = nn.Sequential(*layers)

    def forward(self, code: Tensor) -> Tensor:
        return self.body(self.linear(code).view(-1, self.width, BASE, BASE))


class Encoder(nn.Module):
    """Image -> code: the first half of D."""

    def __init__(self, code: int, width: int, channels: int, scales: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv(channels, width), nn.ELU()]
        previous = width
        for scale in range(scales):
            current = width * (scale + 1)
            layers += [conv(previous, current), nn.ELU(), conv(current, current), nn.ELU()]
            if scale < scales - 1:
                layers += [conv(current, current, stride=2), nn.ELU()]
            previous = current
        self.body = nn.Sequential(*layers)
        self.linear = nn.Linear(previous * BASE * BASE, code)

    def forward(self, images: Tensor) -> Tensor:
        return self.linear(self.body(images).flatten(1))


def glorot(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


def energy(discriminator: nn.Module, images: Tensor) -> Tensor:
    """Per-image mean absolute reconstruction error."""
    return (discriminator(images) - images).abs().flatten(1).mean(1)


def train_one(args: argparse.Namespace, seed: int, reals: Tensor, output: Path) -> dict[str, float]:
    torch.manual_seed(seed)
    channels, side = reals.shape[1], reals.shape[-1]
    scales = int(math.log2(side)) - 2
    generator = Decoder(args.latent_dim, args.width, channels, scales)
    discriminator = nn.Sequential(
        Encoder(args.latent_dim, args.width, channels, scales),
        Decoder(args.latent_dim, args.width, channels, scales),
    )
    generator.apply(glorot)
    discriminator.apply(glorot)
    betas = (args.beta1, 0.999)
    opt_g = torch.optim.Adam(generator.parameters(), lr=args.lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=args.lr, betas=betas)
    order = torch.Generator().manual_seed(seed)
    k, n = 0.0, args.batch_size
    batches_per_epoch = len(reals) // n
    permutation = torch.randperm(len(reals), generator=order)
    trace: list[dict[str, float]] = []
    started = time.time()
    for iteration in range(args.steps):
        position = iteration % batches_per_epoch
        if position == 0 and iteration > 0:
            permutation = torch.randperm(len(reals), generator=order)
        real = reals[permutation[position * n : (position + 1) * n]]
        z = torch.rand(n, args.latent_dim) * 2 - 1
        fake = generator(z)
        energies = energy(discriminator, torch.cat([fake, real]))
        fake_energy, real_energy = energies[:n].mean(), energies[n:].mean()
        loss_d = real_energy - k * fake_energy
        d_grads = torch.autograd.grad(loss_d, list(discriminator.parameters()), retain_graph=True)
        g_grads = torch.autograd.grad(fake_energy, list(generator.parameters()))
        for parameter, gradient in zip(discriminator.parameters(), d_grads, strict=True):
            parameter.grad = gradient
        for parameter, gradient in zip(generator.parameters(), g_grads, strict=True):
            parameter.grad = gradient
        opt_d.step()
        opt_g.step()
        real_value, fake_value = real_energy.item(), fake_energy.item()
        balance = args.gamma * real_value - fake_value
        k = min(max(k + args.lambda_k * balance, 0.0), 1.0)
        row = {"iteration": iteration, "k": k, "real": real_value, "fake": fake_value}
        row["m_global"] = real_value + abs(balance)
        trace.append(row)
        if (iteration + 1) % 500 == 0 or iteration + 1 == args.steps:
            elapsed = time.time() - started
            print(
                f"seed {seed}: iteration {iteration + 1}/{args.steps}, k {k:.5f}, L(x) {real_value:.4f}, "
                f"L(G(z)) {fake_value:.4f}, M_global {row['m_global']:.4f} ({elapsed:.0f} s)",
                flush=True,
            )
    return summarise(args, seed, generator, trace, output)


def summarise(
    args: argparse.Namespace, seed: int, generator: nn.Module, trace: list[dict[str, float]], output: Path
) -> dict[str, float]:
    datamodule = build_datamodule("digits", seed=seed)
    datamodule.setup("test")
    test_images = datamodule.split_tensors("test")[0]
    with torch.no_grad():
        draws = torch.Generator().manual_seed(seed)
        z = torch.rand(len(test_images), args.latent_dim, generator=draws) * 2 - 1
        samples = generator(z).clamp(-1, 1)
    save_image(samples[:64] * 0.5 + 0.5, output / f"samples-seed{seed}.png", nrow=8)
    score = score_images(samples, datamodule, split="test", seed=seed).values
    tail = trace[-max(1, len(trace) // 10) :]
    result = {
        "seed": seed,
        "fd_classifier": score["fd_classifier"],
        "precision": score["precision_classifier"],
        "recall": score["recall_classifier"],
        "final_k": statistics.fmean(row["k"] for row in tail),
        "peak_k": max(row["k"] for row in trace),
        "fake_over_real_energy": statistics.fmean(row["fake"] for row in tail)
        / statistics.fmean(row["real"] for row in tail),
        # One image for every z gives 0; the training images' own spread is the reference.
        "sample_pixel_std": float(samples.std(0).mean()),
    }
    (output / f"result-seed{seed}.json").write_text(json.dumps({**result, "trace": trace[::10]}) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--lambda-k", type=float, default=1e-3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--beta1", type=float, default=0.5)
    parser.add_argument("--output", type=Path, default=Path("runs/began-standalone"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.output.mkdir(parents=True, exist_ok=True)
    datamodule = build_datamodule("digits", seed=0)
    datamodule.setup("fit")
    images = datamodule.split_tensors("train")[0]
    reals = images.float() / 127.5 - 1  # the stored uint8 images in [-1, 1], as every model reads them
    print(
        f"training images {tuple(reals.shape)}, pixel std over images {float(reals.std(0).mean()):.3f}",
        flush=True,
    )
    results = [train_one(args, seed, reals, args.output) for seed in args.seeds]
    for result in results:
        print(json.dumps(result))
    keys = ("fd_classifier", "precision", "recall", "final_k", "fake_over_real_energy", "sample_pixel_std")
    for key in keys:
        print(f"{key}: {mean_std([result[key] for result in results])}")


if __name__ == "__main__":
    main()

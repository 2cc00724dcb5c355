"""Diagnostic: BEGAN trained with the reference implementation's optimizer and update order.

The reference code (carpedm20/BEGAN-tensorflow, trainer.py) differs from `--model began` in two ways the
paper's text leaves open:

- Adam is built as `AdamOptimizer(lr)`: TensorFlow's defaults, beta1 = 0.9 (its config's `--beta1 0.5`
  is never passed on). `--model began` uses beta1 = 0.5.
- Both networks are updated at once from one forward pass: G draws one batch of fakes, D reconstructs
  fakes and reals in one batch, and D's loss L(x) - k_t L(G(z)) and G's loss L(G(z)) are differentiated
  from that same graph before either network moves. `--model began` alternates: a D update, then a G
  update on fresh noise through the updated D.

This script runs `run.py` in-process with those two changes patched into the BEGAN module, so a run is
otherwise the product's (data, nets, logging, metrics; config.yaml names this script's command).
Single process only: the simultaneous step sets gradients itself, which DDP would not all-reduce.

    python bench/probe_began_reference.py --beta1 0.9 [--simultaneous] -- RUN.PY ARGUMENTS
"""

from __future__ import annotations

import argparse
import sys

import torch
from patched_run import model_named, run_patched

from lightning_genae.models import began
from lightning_genae.models.base import adam

Batch = tuple[torch.Tensor, torch.Tensor]


def reference_optimizers(beta1: float):
    def configure_optimizers(self: began.BEGANModule) -> list[torch.optim.Optimizer]:
        betas = (beta1, 0.999)
        return [
            adam(self.discriminator.parameters(), lr=self.options.lr, betas=betas),
            adam(self.generator.parameters(), lr=self.options.lr, betas=betas),
        ]

    return configure_optimizers


def simultaneous_step(
    self: began.BEGANModule, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
) -> None:
    """One forward of G and of D on [fakes; reals]; both losses differentiated before either update."""
    real, _ = batch
    options = self.options
    opt_d, opt_g = self.optimizers()
    n = real.size(0)
    fake = self.generator(self.training_noise(n))
    shown = torch.cat([fake, real])
    energies = began.reconstruction_energy(self.discriminator(shown)[0], shown)
    fake_energy, real_energy = energies[:n].mean(), energies[n:].mean()
    loss_d = real_energy - self.k * fake_energy
    d_params, g_params = list(self.discriminator.parameters()), list(self.generator.parameters())
    d_grads = torch.autograd.grad(loss_d, d_params, retain_graph=True)
    g_grads = torch.autograd.grad(fake_energy, g_params)
    for param, grad in [*zip(d_params, d_grads, strict=True), *zip(g_params, g_grads, strict=True)]:
        param.grad = grad
    opt_d.step()
    opt_g.step()
    real_energy, fake_energy = real_energy.detach(), fake_energy.detach()
    balance = options.began_gamma * real_energy - fake_energy
    self.k.add_(options.began_lambda_k * balance).clamp_(0.0, 1.0)
    self.log_training({"train/loss_d": loss_d.detach(), "train/loss_g": fake_energy}, prog_bar=True)
    self.log_training(
        {
            "train/k": self.k.clone(),
            "train/m_global": real_energy + balance.abs(),
            "train/d_real_energy": real_energy,
            "train/d_fake_energy": fake_energy,
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beta1", type=float, default=0.9, help="Adam's beta1 for both networks")
    parser.add_argument("--simultaneous", action="store_true", help="the reference code's one-graph update")
    parser.add_argument("run_arguments", nargs=argparse.REMAINDER, help="-- then run.py's arguments")
    args = parser.parse_args()
    run_arguments = args.run_arguments[1:] if args.run_arguments[:1] == ["--"] else args.run_arguments
    if model_named(run_arguments) != "began":
        parser.error("give run.py's arguments after --, with --model began")
    began.BEGANModule.configure_optimizers = reference_optimizers(args.beta1)
    if args.simultaneous:
        began.BEGANModule.training_step = simultaneous_step
    probe_arguments = sys.argv[1 : len(sys.argv) - len(args.run_arguments)]
    return run_patched("bench/probe_began_reference.py", probe_arguments, run_arguments)


if __name__ == "__main__":
    sys.exit(main())

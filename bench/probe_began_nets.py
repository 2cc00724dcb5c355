"""Diagnostic: which difference between BEGAN's own nets and the shared DCGAN nets decides the collapse.

At the results page's protocol (digits, width 32, batch 16, 3,000 iterations) BEGAN's loss collapses on
the paper's nets (`--began-nets began`) and trains on the shared DCGAN nets (`--began-nets dcgan`). The
two differ in several things; this script changes one at a time, on the paper's nets or, for batch norm,
also on the DCGAN nets:

- `--batch-norm {generator,discriminator,both}`: batch norm before every ELU of G, of D or of both (the
  DCGAN nets normalise every layer but D's first; here every hidden layer, as the paper's nets have no
  first-layer exception to keep);
- `--activation {elu,relu,leaky_relu}`: the nonlinearity (the DCGAN nets: ReLU in G and D's decoder,
  leaky ReLU 0.2 in D's encoder);
- `--tanh`: a tanh on the output of G and of D's decoder (the paper's have none; the shared ones do);
- `--prior normal`: z ~ N(0, 1) instead of the paper's U(-1, 1);
- `--init dcgan`: DCGAN's N(0, 0.02) initialisation instead of the reference code's Glorot-uniform;
- `--drop-batch-norm {generator,discriminator,both}` on the DCGAN nets (`--began-nets dcgan`): the batch
  norm of G, of D or of both replaced by identity; `discriminator-code` drops only the batch norm of D's
  decoder's projected code (normalised over the batch alone, `BatchNorm1d`), `discriminator-conv` only D's
  convolutional ones (over the batch and the image's positions, `BatchNorm2d`);
- `--code-batch-norm` on the paper's nets: D's decoder's projected code normalised over the batch, as
  the DCGAN nets' decoder does;
- `--paper-scales` on the paper's nets: the reference code's scale plan, halving the image only down to
  an 8x8 map (`repeat_num = log2(side) - 2`: 16 px is two scales from 8x8) where the nets' shared plan
  halves down to 4-7 pixels (16 px: three scales from 4x4);
- `--vanishing-residual STEPS` on the paper's nets: one of the paper's two optional refinements (section
  3.5.1; the other, its skip connections, is run.py's `--began-skip-connections`): every 3x3 convolution
  whose input and output have the same shape, with the ELU after it, becomes carry x input + (1 - carry)
  x ELU(conv(input)), carry falling linearly from 1 to 0 over STEPS iterations (the paper: 16,000, one
  epoch of its data), so the nets start shallow;
- `--dcgan-part {generator,discriminator}` on the paper's nets: that one net is the DCGAN nets' (with its
  own batch norm, tanh and DCGAN initialisation), the other the paper's, so a collapse can be put on G's
  or on D's architecture as a whole (layout, upsampling, depth and h-embedding included).

Nearest-neighbour upsampling against transposed convolutions, the paper's depth (two 3x3 convolutions
per scale against one 4x4) and its fully connected h-embedding are the remaining differences; a patch
cannot separate them, `--dcgan-part` swaps them per net. docs/results-began.md ("What in the nets decides
it") has the measured table.

The run is otherwise the product's (`run.py` in-process: data, logging, metrics, the run folder, whose
config.yaml names this script's command as the way to repeat it).

    python bench/probe_began_nets.py [--batch-norm both] [--activation relu] [--tanh] [--prior normal] \
        [--init dcgan] -- RUN.PY ARGUMENTS
    python bench/probe_began_nets.py --drop-batch-norm generator -- RUN.PY ARGUMENTS --began-nets dcgan
    python bench/probe_began_nets.py --dcgan-part generator -- RUN.PY ARGUMENTS
"""

from __future__ import annotations

import argparse
import sys

import torch
from patched_run import run_patched
from torch import Tensor, nn

from lightning_genae.models import began
from lightning_genae.nets import began as began_nets
from lightning_genae.nets.conv import downsampling_plan, init_dcgan_weights

ACTIVATIONS = {
    "elu": lambda: nn.ELU(inplace=True),
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
}


def rebuilt(layers: nn.Sequential, batch_norm: bool, activation: str) -> nn.Sequential:
    """The same convolutions, each ELU replaced by the activation (after batch norm, with `batch_norm`)."""
    out: list[nn.Module] = []
    channels = None
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            channels = layer.out_channels
            out.append(layer)
        elif isinstance(layer, nn.ELU):
            if batch_norm:
                out.append(nn.BatchNorm2d(channels))
            out.append(ACTIVATIONS[activation]())
        else:
            out.append(layer)
    return nn.Sequential(*out)


class CarriedLayer(nn.Module):
    """carry x input + (1 - carry) x layer(input), carry read from a tensor shared by every such layer."""

    def __init__(self, layer: nn.Module, carry: Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.carry = carry

    def forward(self, x: Tensor) -> Tensor:
        carry = float(self.carry)
        if carry <= 0:
            return self.layer(x)
        return carry * x + (1 - carry) * self.layer(x)


CARRY = torch.ones(())


def with_vanishing_residuals(layers: nn.Sequential) -> nn.Sequential:
    """Each shape-keeping 3x3 convolution, with the activation after it, wrapped in a CarriedLayer."""
    items = list(layers)
    out: list[nn.Module] = []
    i = 0
    while i < len(items):
        layer = items[i]
        same_shape = (
            isinstance(layer, nn.Conv2d)
            and layer.in_channels == layer.out_channels
            and layer.stride == (1, 1)
        )
        if same_shape and i + 1 < len(items) and isinstance(items[i + 1], nn.ELU):
            out.append(CarriedLayer(nn.Sequential(layer, items[i + 1]), CARRY))
            i += 2
        else:
            out.append(layer)
            i += 1
    return nn.Sequential(*out)


def paper_generator(args: argparse.Namespace):
    def build(*a, **kw) -> nn.Module:
        net = PAPER_DECODER(*a, **kw)
        net.blocks = rebuilt(net.blocks, args.batch_norm in ("generator", "both"), args.activation)
        if args.vanishing_residual:
            net.blocks = with_vanishing_residuals(net.blocks)
        if args.tanh:
            net.blocks.append(nn.Tanh())
        return net

    return build


def paper_discriminator(args: argparse.Namespace):
    def build(*a, **kw) -> nn.Module:
        net = PAPER_AUTOENCODER(*a, **kw)
        normalised = args.batch_norm in ("discriminator", "both")
        net.encoder.features = rebuilt(net.encoder.features, normalised, args.activation)
        net.decoder.blocks = rebuilt(net.decoder.blocks, normalised, args.activation)
        if args.vanishing_residual:
            net.encoder.features = with_vanishing_residuals(net.encoder.features)
            net.decoder.blocks = with_vanishing_residuals(net.decoder.blocks)
        if args.code_batch_norm:
            net.decoder.project = nn.Sequential(
                net.decoder.project, nn.BatchNorm1d(net.decoder.project.out_features)
            )
        if args.tanh:
            net.decoder.blocks.append(nn.Tanh())
        return net

    return build


def dcgan_net(net_type: type[nn.Module], **extra: object):
    """`net_type` (a DCGAN net) in the paper net's place, initialised as the DCGAN nets are: the module's
    later Glorot initialisation of the paper's nets is not applied to it."""

    def build(*a, skip_connections: bool = False, **kw) -> nn.Module:
        # The module passes the paper nets' skip flag; main() refuses it with --dcgan-part.
        net = net_type(*a, **kw, **extra)
        net.apply(init_dcgan_weights)
        # The module applies init_began_weights to its nets afterwards; this one keeps DCGAN's.
        net.apply = lambda fn: net
        return net

    return build


def without_batch_norm(net_type: type[nn.Module], kinds: tuple[type[nn.Module], ...]):
    """`net_type`'s constructor, its batch norm layers of the given kinds replaced by identity."""

    def build(*a, **kw) -> nn.Module:
        net = net_type(*a, **kw)
        for name, child in list(net.named_modules()):
            if isinstance(child, kinds):
                parent_name, _, attribute = name.rpartition(".")
                setattr(net.get_submodule(parent_name), attribute, nn.Identity())
        return net

    return build


PAPER_DECODER, PAPER_AUTOENCODER = began.BEGANDecoder, began.BEGANAutoencoder


def reference_plan(image_size: int) -> tuple[int, int]:
    """(stride-2 stages, base map side) as the reference code scales: halve while the side exceeds 8."""
    return downsampling_plan(image_size, max_base=8)


def positive_steps(text: str) -> int:
    steps = int(text)
    if steps <= 0:
        raise argparse.ArgumentTypeError(f"a positive number of iterations, got {steps}")
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = ["none", "generator", "discriminator", "both"]
    parser.add_argument(
        "--batch-norm", choices=where, default="none", help="the paper's nets: add batch norm"
    )
    parser.add_argument(
        "--code-batch-norm",
        action="store_true",
        help="the paper's nets: batch norm (over the batch) on D's decoder's projected code",
    )
    dropped = [*where, "discriminator-code", "discriminator-conv"]
    parser.add_argument("--drop-batch-norm", choices=dropped, default="none", help="the DCGAN nets: drop it")
    parser.add_argument("--activation", choices=sorted(ACTIVATIONS), default="elu")
    parser.add_argument("--tanh", action="store_true", help="tanh on G's and D's decoder's output")
    parser.add_argument("--prior", choices=["uniform", "normal"], default="uniform")
    parser.add_argument("--init", choices=["glorot", "dcgan"], default="glorot")
    parser.add_argument(
        "--dcgan-part",
        choices=["generator", "discriminator"],
        help="the paper's nets: swap in that DCGAN net",
    )
    parser.add_argument(
        "--paper-scales",
        action="store_true",
        help="the paper's nets: halve the image down to 8x8 only, as the reference code",
    )
    parser.add_argument(
        "--vanishing-residual",
        type=positive_steps,
        default=0,
        metavar="STEPS",
        help="the paper's nets: shape-keeping layers start as identity, carry 1 -> 0 over STEPS",
    )
    parser.add_argument("run_arguments", nargs=argparse.REMAINDER, help="-- then run.py's arguments")
    args = parser.parse_args()
    run_arguments = args.run_arguments[1:] if args.run_arguments[:1] == ["--"] else args.run_arguments
    # run.py's own spellings (`--model began`, `--model=began`), read as run.py reads them.
    named = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    named.add_argument("--model")
    named.add_argument("--began-nets", default="began")
    named.add_argument("--began-skip-connections", action="store_true")
    run_options, _ = named.parse_known_args(run_arguments)
    if run_options.model != "began":
        parser.error("give run.py's arguments after --, with --model began")
    dcgan_nets = run_options.began_nets == "dcgan"
    paper_changes = (
        args.batch_norm != "none"
        or args.code_batch_norm
        or args.activation != "elu"
        or args.tanh
        or args.init != "glorot"
        or args.paper_scales
        or args.vanishing_residual
    )
    if dcgan_nets and paper_changes:
        parser.error(
            "--batch-norm, --code-batch-norm, --activation, --tanh, --init, --paper-scales and "
            "--vanishing-residual change the paper's nets; drop --began-nets dcgan"
        )
    if args.dcgan_part and (dcgan_nets or paper_changes or run_options.began_skip_connections):
        parser.error(
            "--dcgan-part swaps one of the paper's nets as published; drop the other changes and "
            "--began-skip-connections"
        )
    if args.drop_batch_norm != "none" and not dcgan_nets:
        parser.error("--drop-batch-norm changes the DCGAN nets; add --began-nets dcgan after --")

    # The module builds its nets through these names, and keeps its own constructor (Lightning reads its
    # arguments from the frame for the checkpoint's hyperparameters).
    began.BEGANDecoder = paper_generator(args)
    began.BEGANAutoencoder = paper_discriminator(args)
    if args.init == "dcgan":
        began.init_began_weights = init_dcgan_weights
    if args.dcgan_part == "generator":
        began.BEGANDecoder = dcgan_net(began.ConvDecoder, output="tanh")
    elif args.dcgan_part == "discriminator":
        began.BEGANAutoencoder = dcgan_net(began.ConvAutoencoder)
    every_kind = (nn.BatchNorm1d, nn.BatchNorm2d)
    if args.drop_batch_norm in ("generator", "both"):
        began.ConvDecoder = without_batch_norm(began.ConvDecoder, every_kind)
    dropped_in_d = {
        "discriminator": every_kind,
        "both": every_kind,
        "discriminator-code": (nn.BatchNorm1d,),
        "discriminator-conv": (nn.BatchNorm2d,),
    }.get(args.drop_batch_norm)
    if dropped_in_d:
        began.ConvAutoencoder = without_batch_norm(began.ConvAutoencoder, dropped_in_d)
    if args.paper_scales:
        began_nets.downsampling_plan = reference_plan
    if args.vanishing_residual:
        steps = args.vanishing_residual
        step_once = began.BEGANModule.training_step

        def training_step(self, batch, batch_idx):
            CARRY.fill_(max(0.0, 1.0 - self.iteration / steps))
            return step_once(self, batch, batch_idx)

        began.BEGANModule.training_step = training_step
    if args.prior == "normal":
        began.BEGANModule.uniform_prior = property(lambda self: False)
    probe_arguments = sys.argv[1 : len(sys.argv) - len(args.run_arguments)]
    return run_patched("bench/probe_began_nets.py", probe_arguments, run_arguments)


if __name__ == "__main__":
    sys.exit(main())

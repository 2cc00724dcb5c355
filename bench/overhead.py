"""Benchmark: a training iteration through `run.py`'s own code path against a bare PyTorch loop.

The framework side is `lightning_genae.cli.main` with the run's usual callbacks, loggers, progress bar,
divergence guard and data loader, plus one timing callback; evaluation, image grids and checkpoints are
pushed past the end of the run (their cost is a cadence, measured by `bench/eval.py`), so what is timed is
the training iteration and its per-step logging. The bare side is a plain loop with the same networks
(`lightning_genae.nets`), initialisation, optimizers and losses as the family, on a pre-made tensor
the run's training images held as one tensor
(the first 4,096) batched by random index: no Lightning, no loader, no logging.

Each side runs `--warmup` iterations, then `--repeats` blocks of `--block` iterations; a side's figure is
its median block. On the CPU the clock is this process's CPU time with one thread, so other work on a
shared machine does not inflate either side; on a GPU it is wall time after a device sync.

    python bench/overhead.py [--device cuda] [--families gan,vae,ae] [--batch-sizes 64,256]
        [--precisions 32-true,bf16-mixed] [--data mnist] [--json bench/overhead.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_genae.nets import ConvDecoder, ConvDiscriminator, ConvEncoder, init_dcgan_weights

# Far beyond any timed run: no validation, image grid or checkpoint falls inside the timed stretch.
NEVER = 10**9


def clock_for(device: torch.device) -> Callable[[], float]:
    """Process CPU time on the CPU (robust to a busy machine), wall time after a sync on a GPU."""
    if device.type == "cuda":

        def synced() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()

        return synced
    return time.process_time


def median_block_ms(stamps: list[float], warmup: int, block: int, repeats: int) -> float:
    """Median milliseconds per iteration over `repeats` blocks after `warmup` iterations.

    `stamps[i]` is the clock at the end of iteration i (stamps[-1]... index 0 is the first iteration).
    """
    ends = [warmup - 1 + block * k for k in range(repeats + 1)]
    blocks = [(stamps[b] - stamps[a]) / block * 1000 for a, b in zip(ends, ends[1:], strict=False)]
    return statistics.median(blocks)


# ---- framework side -------------------------------------------------------------------------------------


class IterationClock:
    """A Lightning callback noting the clock at the end of each training iteration, and the model built."""

    def __init__(self, clock: Callable[[], float]) -> None:
        from pytorch_lightning.callbacks import Callback

        outer = self

        class _Hook(Callback):
            def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
                if pl_module.global_step % pl_module.optimizer_steps_per_iteration == 0:
                    outer.stamps.append(clock())
                outer.model, outer.datamodule = pl_module, trainer.datamodule

        self.callback = _Hook()
        self.stamps: list[float] = []
        self.model: Any = None
        self.datamodule: Any = None


@contextlib.contextmanager
def timed_callbacks(timer: IterationClock) -> Iterator[None]:
    """Add the timing callback to the callbacks `train.run` builds, so the run is otherwise run.py's own."""
    import lightning_genae.train as train

    built = train.build_callbacks

    def with_timer(*args: Any, **kwargs: Any) -> list[Any]:
        return [*built(*args, **kwargs), timer.callback]

    train.build_callbacks = with_timer
    try:
        yield
    finally:
        train.build_callbacks = built


def framework_run(
    family: str, data: str, batch: int, precision: str, accelerator: str, iterations: int, out: Path
) -> IterationClock:
    """One `run.py` run of `iterations` training iterations; returns its per-iteration clock."""
    from lightning_genae.cli import main

    timer = IterationClock(clock_for(torch.device("cuda" if accelerator == "gpu" else "cpu")))
    argv = [
        *("--model", family, "--data", data, "--max-steps", str(iterations)),
        *("--batch-size", str(batch), "--precision", precision),
        *("--accelerator", accelerator, "--devices", "1"),
        *("--eval-every", str(NEVER), "--image-every", str(NEVER), "--ckpt-every", str(NEVER)),
        *("--eval-samples", "256", "--output", str(out), "--overwrite"),
    ]
    with timed_callbacks(timer):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"run.py {' '.join(argv)} failed with exit code {code}")
    return timer


# ---- bare side ------------------------------------------------------------------------------------------


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "32-true":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def gan_step(model: Any, device: torch.device, precision: str) -> Callable[[Tensor], None]:
    """One D and one G update as `GANModule.training_step` makes them, written by hand."""
    from lightning_genae.models.gan import discriminator_loss, generator_loss

    shape, options = model.image_shape, model.options
    generator = ConvDecoder(shape, options.latent_dim, width=options.width, output="tanh").to(device)
    discriminator = ConvDiscriminator(shape, width=options.width).to(device)
    generator.apply(init_dcgan_weights)
    discriminator.apply(init_dcgan_weights)
    opt_d, opt_g = (
        optimizer.__class__(net.parameters(), **_settings(optimizer))
        for optimizer, net in zip(model.trainer.optimizers, (discriminator, generator), strict=True)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    kind, latent = options.gan_loss, options.latent_dim

    def step(real: Tensor) -> None:
        n = real.size(0)
        generator.requires_grad_(False)
        with autocast_for(device, precision):
            with torch.no_grad():
                fake = generator(torch.randn(n, latent, device=device))
            loss_d = discriminator_loss(discriminator(real), discriminator(fake), kind)
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(loss_d).backward()
        scaler.step(opt_d)
        generator.requires_grad_(True)
        discriminator.requires_grad_(False)
        with autocast_for(device, precision):
            loss_g = generator_loss(discriminator(generator(torch.randn(n, latent, device=device))), kind)
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(loss_g).backward()
        scaler.step(opt_g)
        discriminator.requires_grad_(True)
        scaler.update()

    return step


def autoencoder_step(model: Any, device: torch.device, precision: str) -> Callable[[Tensor], None]:
    """One update of the ae's or vae's encoder and decoder with the family's own loss, written by hand."""
    from lightning_genae.models.reconstruction import reconstruction_loss
    from lightning_genae.models.variational import gaussian_kl, gaussian_posterior, reparameterize

    shape, options = model.image_shape, model.options
    variational = model.encoder_outputs_per_latent == 2
    latent, kind = options.latent_dim, options.recon_loss
    encoder = ConvEncoder(shape, model.encoder_outputs_per_latent * latent, width=options.width).to(device)
    decoder = ConvDecoder(
        shape, latent, width=options.width, output="logits" if kind == "bce" else "tanh"
    ).to(device)
    (optimizer,) = model.trainer.optimizers
    opt = optimizer.__class__([*encoder.parameters(), *decoder.parameters()], **_settings(optimizer))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")

    def step(real: Tensor) -> None:
        with autocast_for(device, precision):
            if variational:
                mean, log_var = gaussian_posterior(encoder(real))
                out = decoder(reparameterize(mean, log_var))
                loss = (
                    reconstruction_loss(out, real, kind).mean()
                    + options.beta * gaussian_kl(mean, log_var).mean()
                )
            else:
                loss = reconstruction_loss(decoder(encoder(real)), real, kind).mean() / real[0].numel()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def _settings(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The constructor settings of one of the run's optimizers (lr, betas, foreach, ...)."""
    group = optimizer.param_groups[0]
    return {key: value for key, value in group.items() if key != "params" and key in optimizer.defaults}


def bare_run(
    model: Any, datamodule: Any, device: torch.device, precision: str, batch: int, iterations: int
) -> list[float]:
    """The bare loop with the framework run's nets and settings; the clock at the end of each iteration."""
    step = (gan_step if model.optimizer_steps_per_iteration == 2 else autoencoder_step)(
        model, device, precision
    )
    clock = clock_for(device)
    # The run's own training images, already in the model's range on the device: no loader, no copies.
    stored, _ = datamodule.split_tensors("train")
    pool = datamodule.to_model_range(stored[: max(4096, batch)].to(device))
    stamps = []
    for _ in range(iterations):
        step(pool[torch.randint(len(pool), (batch,), device=device)])
        stamps.append(clock())
    return stamps


def versions() -> dict[str, str]:
    import pytorch_lightning as pl

    return {"python": platform.python_version(), "torch": torch.__version__, "lightning": pl.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--families", default="gan", help="comma list of gan, vae, ae")
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--precisions", default=None, help="default: 32-true,bf16-mixed (+16-mixed on cuda)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument("--json", default="bench/overhead.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    precisions = args.precisions or (
        "32-true,bf16-mixed,16-mixed" if device.type == "cuda" else "32-true,bf16-mixed"
    )
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    iterations = args.warmup + args.block * args.repeats
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for family in args.families.split(","):
            for batch in map(int, args.batch_sizes.split(",")):
                for precision in precisions.split(","):
                    out = Path(scratch) / f"{family}-{batch}-{precision}"
                    timer = framework_run(family, args.data, batch, precision, accelerator, iterations, out)
                    framework = median_block_ms(timer.stamps, args.warmup, args.block, args.repeats)
                    stamps = bare_run(timer.model, timer.datamodule, device, precision, batch, iterations)
                    bare = median_block_ms(stamps, args.warmup, args.block, args.repeats)
                    rows.append(
                        {
                            "family": family,
                            "batch": batch,
                            "precision": precision,
                            "framework_ms": round(framework, 2),
                            "bare_ms": round(bare, 2),
                            "ratio": round(framework / bare, 3),
                        }
                    )
    print(f"\n{'family':7}{'batch':>6}  {'precision':11}{'run.py ms/it':>13}{'bare ms/it':>12}{'ratio':>7}")
    for row in rows:
        print(
            f"{row['family']:7}{row['batch']:>6}  {row['precision']:11}{row['framework_ms']:>13.2f}"
            f"{row['bare_ms']:>12.2f}{row['ratio']:>7.3f}"
        )
    result = {
        "device": args.device,
        "data": args.data,
        "clock": "process CPU time" if device.type == "cpu" else "wall",
        "threads": args.threads if device.type == "cpu" else None,
        "warmup": args.warmup,
        "block": args.block,
        "repeats": args.repeats,
        **versions(),
        "rows": rows,
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

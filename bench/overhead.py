"""Benchmark: a training iteration through `run.py`'s own code path against a bare PyTorch loop.

The framework side is `lightning_genae.experiment.cli.main` with the run's usual callbacks, loggers,
progress bar,
divergence guard and data loader, plus one timing callback; evaluation, image grids and checkpoints are
pushed past the end of the run (their cost is a cadence, measured by `bench/eval.py`), so what is timed is
the training iteration and its per-step logging. The bare side is a plain loop with the same networks
(`lightning_genae.nets`), initialisation, optimizers and losses as the family, on the run's training
images (the first 4,096) held as one tensor and batched by random index: no Lightning, no loader, no
logging.

Each side runs `--warmup` iterations, then `--repeats` blocks of `--block` iterations, the two sides
alternating block by block in one process; a side's figure is its median block. On the CPU the clock is
this process's CPU time with one thread; on a GPU it is wall time after a device sync.

    python bench/overhead.py [--device cuda] [--families gan,vae,ae] [--batch-sizes 64,256]
        [--precisions 32-true,bf16-mixed] [--data mnist] [--width 8] [--json bench/overhead.json]

A third side, `--loader-loop` (on by default), is the loop a researcher writes by hand: the bare loop's
step fed by a torch DataLoader over a torchvision-style per-image dataset (each image made a PIL image and
passed through ToTensor and Normalize, as `torchvision.datasets.MNIST` with those transforms does),
shuffled, `--loader-workers` workers (default 4 on a GPU, pinned memory and non-blocking copies; 0 on the
CPU, where the workers' CPU time would escape this process's clock). The targets compare `run.py`
with both loops: `speed vs loader` is the loader loop's ms/it over `run.py`'s (>= 1.0 wanted) and
`speed vs bare` the bare loop's over `run.py`'s (>= 0.85 wanted).

A fourth side, the Lightning loop (on by default; `--no-lightning-loop` leaves it out), runs the bare step
as the `training_step` of a plain LightningModule in a Trainer with its logger, checkpointing, progress bar
and model summary off, fed the bare loop's batches by a plain iterable, alternating with bare blocks of
its own: its excess over the bare loop is what Lightning's loop costs by itself (`Lightning +ms`), and
`run.py`'s excess over it what the framework adds to Lightning (`run.py +ms`).

`--width` (and `--latent-dim`) shrink both sides' networks alike, so the framework's fixed cost per
iteration (Lightning's loop, callbacks, logging), which does not shrink with them, shows in the ratio, as
it would on a GPU, where the networks' kernels take a few milliseconds.

The bare GAN and autoencoder steps are written out in this one file beside the framework's run of the
same networks, and the table that compares them.
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

from lightning_genae.nets.conv import ConvDecoder, ConvDiscriminator, ConvEncoder, init_dcgan_weights

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


# ---- framework side -------------------------------------------------------------------------------------


class InterleavedClock:
    """A Lightning callback that times the run's iterations in blocks and runs a bare block after each.

    Alternating the two sides block by block, in one process, makes both see the same machine: a load that
    comes and goes on a shared computer affects each side alike instead of whichever ran during it.
    """

    def __init__(
        self, device: torch.device, precision: str, batch: int, warmup: int, block: int, bare: bool = True
    ) -> None:
        from pytorch_lightning.callbacks import Callback

        self.clock = clock_for(device)
        self.device, self.precision, self.batch = device, precision, batch
        self.warmup, self.block = warmup, block
        self.framework_ms: list[float] = []
        self.bare_ms: list[float] = []
        self.loader_ms: list[float] = []
        # The Lightning loop's blocks and the bare blocks alternated with them (`lightning_loop`).
        self.lightning_ms: list[float] = []
        self.lightning_bare_ms: list[float] = []
        self._block_started = 0.0
        self._bare: BareLoop | None = None
        self._loader: LoaderLoop | None = None
        self._compare = bare
        # Workers of the hand-written loader loop; None: no loader loop.
        self.loader_workers: int | None = None
        self._warm = False
        # The run's module, kept for the Lightning loop (`lightning_loop`), which builds the same step.
        self.model: Any = None
        outer = self

        class _Hook(Callback):
            def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
                outer.after_iteration(trainer, pl_module)

        self.callback = _Hook()

    def after_iteration(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_step % pl_module.optimizer_steps_per_iteration:
            return
        done = pl_module.iteration - self.warmup
        if done < 0 or done % self.block:
            return
        if not self._warm:
            self._warm = True
            self.model = pl_module
            if self._compare:
                self._bare = BareLoop(pl_module, trainer.datamodule, self.device, self.precision, self.batch)
                self._bare.run(self.warmup, self.clock)
                if self.loader_workers is not None:
                    self._loader = LoaderLoop(
                        pl_module,
                        trainer.datamodule,
                        self.device,
                        self.precision,
                        self.batch,
                        self.loader_workers,
                    )
                    self._loader.run(self.warmup, self.clock)
        else:
            self.framework_ms.append((self.clock() - self._block_started) / self.block * 1000)
            if self._bare is not None:
                self.bare_ms.append(self._bare.run(self.block, self.clock) / self.block * 1000)
            if self._loader is not None:
                self.loader_ms.append(self._loader.run(self.block, self.clock) / self.block * 1000)
        self._block_started = self.clock()


@contextlib.contextmanager
def added_callback(callback: Any) -> Iterator[None]:
    """Add a measuring callback to the callbacks `train.run` builds, so the run is otherwise run.py's own."""
    import lightning_genae.experiment.train as train

    built = train.build_callbacks

    def with_timer(*args: Any, **kwargs: Any) -> list[Any]:
        return [*built(*args, **kwargs), callback]

    train.build_callbacks = with_timer
    try:
        yield
    finally:
        train.build_callbacks = built


def framework_run(
    family: str,
    data: str,
    precision: str,
    accelerator: str,
    iterations: int,
    out: Path,
    timer: InterleavedClock,
    extra: tuple[str, ...] = (),
) -> None:
    """One `run.py` run of `iterations` training iterations, timed by `timer`."""
    from lightning_genae.experiment.cli import main

    batch = timer.batch
    argv = [
        *("--model", family, "--data", data, "--max-steps", str(iterations)),
        *("--batch-size", str(batch), "--precision", precision),
        *("--accelerator", accelerator, "--devices", "1"),
        *("--eval-every", str(NEVER), "--image-every", str(NEVER), "--ckpt-every", str(NEVER)),
        *("--eval-samples", "256", "--output", str(out), "--overwrite"),
        *extra,
    ]
    with added_callback(timer.callback):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"run.py {' '.join(argv)} failed with exit code {code}")


# ---- Lightning loop -------------------------------------------------------------------------------------


def lightning_loop(timer: InterleavedClock, accelerator: str, warmup: int, block: int, repeats: int) -> None:
    """The bare loop's step inside a plain Lightning Trainer: what Lightning's loop costs on its own.

    A LightningModule whose training_step is the bare step (its own nets, optimizers and autocast), fed the
    bare loop's random-index batches by a plain iterable, with Lightning's logger, checkpointing, progress
    bar and model summary off. Blocks alternate with bare blocks as on the framework side; the module's
    time over the bare loop's is Lightning's floor, run.py's over the module's what the framework adds.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback

    bare = timer._bare
    assert bare is not None and timer.model is not None, "run the framework side first"
    step = bare_step(timer.model, timer.device, timer.precision)
    pool, batch, device = bare.pool, timer.batch, timer.device
    total = warmup + block * repeats

    class BareStepModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch: Tensor, batch_idx: int) -> None:
            step(batch)

        def configure_optimizers(self) -> None:
            return None  # the step holds its own optimizers

    class RandomBatches:
        def __iter__(self) -> Iterator[Tensor]:
            for _ in range(total):
                yield pool[torch.randint(len(pool), (batch,), device=device)]

    class Blocks(Callback):
        def __init__(self) -> None:
            self.done, self.started = 0, 0.0

        def on_train_batch_end(self, *args: Any) -> None:
            self.done += 1
            timed = self.done - warmup
            if timed < 0 or timed % block:
                return
            if timed:
                timer.lightning_ms.append((timer.clock() - self.started) / block * 1000)
                timer.lightning_bare_ms.append(bare.run(block, timer.clock) / block * 1000)
            self.started = timer.clock()

    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[Blocks()],
    )
    trainer.fit(BareStepModule(), train_dataloaders=RandomBatches())


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


def bare_step(model: Any, device: torch.device, precision: str) -> Callable[[Tensor], None]:
    """The hand-written step of the run's family: the GAN's for two optimizer steps per iteration, else the
    autoencoder's."""
    make_step = gan_step if model.optimizer_steps_per_iteration == 2 else autoencoder_step
    return make_step(model, device, precision)


def _settings(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The constructor settings of one of the run's optimizers (lr, betas, foreach, ...)."""
    group = optimizer.param_groups[0]
    return {key: value for key, value in group.items() if key != "params" and key in optimizer.defaults}


class BareLoop:
    """The bare loop with the framework run's nets and settings, on the run's own training images held as
    one tensor in the model's range on the device: no loader, no copies, no Lightning."""

    def __init__(self, model: Any, datamodule: Any, device: torch.device, precision: str, batch: int) -> None:
        self.step = bare_step(model, device, precision)
        stored, _ = datamodule.split_tensors("train")
        self.pool = datamodule.to_model_range(stored[: max(4096, batch)].to(device))
        self.batch, self.device = batch, device

    def run(self, iterations: int, clock: Callable[[], float]) -> float:
        """Seconds on `clock` for `iterations` bare iterations."""
        started = clock()
        for _ in range(iterations):
            self.step(self.pool[torch.randint(len(self.pool), (self.batch,), device=self.device)])
        return clock() - started


class PerImageDataset(torch.utils.data.Dataset):
    """What `torchvision.datasets.MNIST(transform=Compose([ToTensor(), Normalize(0.5, 0.5)]))` does per
    item, over the run's stored images: a PIL image from the array, then the transforms."""

    def __init__(self, stored: Tensor) -> None:
        from torchvision import transforms

        self.stored = stored.numpy()
        channels = stored.shape[1]
        self.transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((0.5,) * channels, (0.5,) * channels)]
        )

    def __len__(self) -> int:
        return len(self.stored)

    def __getitem__(self, index: int) -> Tensor:
        from PIL import Image

        image = self.stored[index]
        picture = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        return self.transform(picture)


class LoaderLoop:
    """The bare loop's step fed by a shuffled DataLoader over per-image transforms: the hand-written loop."""

    def __init__(
        self, model: Any, datamodule: Any, device: torch.device, precision: str, batch: int, workers: int
    ) -> None:
        self.step = bare_step(model, device, precision)
        stored, _ = datamodule.split_tensors("train")
        pinned = device.type == "cuda"
        self.loader = torch.utils.data.DataLoader(
            PerImageDataset(stored),
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            pin_memory=pinned,
            persistent_workers=workers > 0,
        )
        self.batches = iter(self.loader)
        self.device, self.non_blocking = device, pinned

    def next_batch(self) -> Tensor:
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def run(self, iterations: int, clock: Callable[[], float]) -> float:
        started = clock()
        for _ in range(iterations):
            self.step(self.next_batch().to(self.device, non_blocking=self.non_blocking))
        return clock() - started


def versions() -> dict[str, str]:
    import pytorch_lightning as pl

    return {"python": platform.python_version(), "torch": torch.__version__, "lightning": pl.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--families", default="gan", help="comma list of gan, vae, ae")
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--width", type=int, default=None, help="network width (default: the family's)")
    parser.add_argument("--latent-dim", type=int, default=None, help="default: the family's")
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--precisions", default=None, help="default: 32-true,bf16-mixed (+16-mixed on cuda)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument(
        "--loader-workers",
        type=int,
        default=None,
        help="the hand-written loader loop's (default 4 on cuda, 0 on cpu)",
    )
    parser.add_argument("--no-loader-loop", action="store_true", help="leave out the loader loop")
    parser.add_argument(
        "--no-lightning-loop", action="store_true", help="leave out the bare step in a plain Trainer"
    )
    parser.add_argument("--json", default="bench/overhead.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    precisions = args.precisions or (
        "32-true,bf16-mixed,16-mixed" if device.type == "cuda" else "32-true,bf16-mixed"
    )
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    # One bare block follows each framework block, the last one after the final timed iteration.
    iterations = args.warmup + args.block * args.repeats
    # Options both sides share: the bare loop builds its networks from the run's model.
    extra: tuple[str, ...] = ()
    if args.width is not None:
        extra += ("--width", str(args.width))
    if args.latent_dim is not None:
        extra += ("--latent-dim", str(args.latent_dim))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for family in args.families.split(","):
            for batch in map(int, args.batch_sizes.split(",")):
                for precision in precisions.split(","):
                    out = Path(scratch) / f"{family}-{batch}-{precision}"
                    timer = InterleavedClock(device, precision, batch, args.warmup, args.block)
                    if not args.no_loader_loop:
                        timer.loader_workers = (
                            args.loader_workers
                            if args.loader_workers is not None
                            else 4 * (device.type == "cuda")
                        )
                    framework_run(family, args.data, precision, accelerator, iterations, out, timer, extra)
                    if not args.no_lightning_loop:
                        lightning_loop(timer, accelerator, args.warmup, args.block, args.repeats)
                    framework = statistics.median(timer.framework_ms)
                    bare = statistics.median(timer.bare_ms)
                    ratios = [f / b for f, b in zip(timer.framework_ms, timer.bare_ms, strict=True)]
                    rows.append(
                        {
                            "family": family,
                            "batch": batch,
                            "precision": precision,
                            "framework_ms": round(framework, 2),
                            "bare_ms": round(bare, 2),
                            "ratio": round(framework / bare, 3),
                            # Each framework block over the bare block run right after it.
                            "median_paired_ratio": round(statistics.median(ratios), 3),
                            "framework_blocks_ms": [round(value, 2) for value in timer.framework_ms],
                            "bare_blocks_ms": [round(value, 2) for value in timer.bare_ms],
                            **loader_columns(timer, framework, bare),
                            **lightning_columns(timer),
                        }
                    )
                    # Written after every row, so a long sweep stopped part-way keeps what it measured.
                    write_results(args, device, rows)
    header = f"{'family':7}{'batch':>6}  {'precision':11}{'run.py ms/it':>13}{'bare ms/it':>12}"
    header += f"{'ratio':>7}{'paired':>8}{'loader ms/it':>14}{'speed vs loader':>17}{'speed vs bare':>15}"
    header += f"{'Lightning ms/it':>17}{'Lightning +ms':>15}{'run.py +ms':>12}"
    print(f"\n{header}")
    for row in rows:
        lightning = (
            f"{row['lightning_ms']:>17.2f}{row['lightning_over_bare_ms']:>15.2f}"
            f"{row['framework_over_lightning_ms']:>12.2f}"
            if "lightning_ms" in row
            else f"{'-':>17}{'-':>15}{'-':>12}"
        )
        loader = (
            f"{row['loader_ms']:>14.2f}{row['speed_vs_loader']:>17.3f}{row['speed_vs_bare']:>15.3f}"
            if "loader_ms" in row
            else f"{'-':>14}{'-':>17}{row['speed_vs_bare']:>15.3f}"
        )
        print(
            f"{row['family']:7}{row['batch']:>6}  {row['precision']:11}{row['framework_ms']:>13.2f}"
            f"{row['bare_ms']:>12.2f}{row['ratio']:>7.3f}{row['median_paired_ratio']:>8.3f}{loader}{lightning}"
        )
    print(f"wrote {args.json}")


def loader_columns(timer: InterleavedClock, framework: float, bare: float) -> dict[str, Any]:
    """Goal 1's speeds: each hand-written loop's time per iteration over run.py's (above 1: run.py faster)."""
    columns: dict[str, Any] = {"speed_vs_bare": round(bare / framework, 3)}
    if timer.loader_ms:
        loader = statistics.median(timer.loader_ms)
        columns.update(
            {
                "loader_workers": timer.loader_workers,
                "loader_ms": round(loader, 2),
                "speed_vs_loader": round(loader / framework, 3),
                "loader_blocks_ms": [round(value, 2) for value in timer.loader_ms],
            }
        )
    return columns


def lightning_columns(timer: InterleavedClock) -> dict[str, Any]:
    """The Lightning loop's time per iteration, its excess over the bare blocks alternated with it
    (Lightning's own cost) and what run.py adds on top: run.py's excess over its bare blocks less the
    Lightning loop's over its own, in ms. Both are paired differences, so a machine that speeds up or slows
    down between the two runs does not enter them."""
    if not timer.lightning_ms:
        return {}

    def excess(side: list[float], bare: list[float]) -> float:
        return statistics.median(a - b for a, b in zip(side, bare, strict=True))

    lightning_excess = excess(timer.lightning_ms, timer.lightning_bare_ms)
    framework_excess = excess(timer.framework_ms, timer.bare_ms)
    return {
        "lightning_ms": round(statistics.median(timer.lightning_ms), 2),
        "lightning_over_bare_ms": round(lightning_excess, 2),
        "framework_over_bare_ms": round(framework_excess, 2),
        "framework_over_lightning_ms": round(framework_excess - lightning_excess, 2),
        "lightning_blocks_ms": [round(value, 2) for value in timer.lightning_ms],
        "lightning_bare_blocks_ms": [round(value, 2) for value in timer.lightning_bare_ms],
    }


def write_results(args: argparse.Namespace, device: torch.device, rows: list[dict[str, Any]]) -> None:
    result = {
        "device": args.device,
        "data": args.data,
        "width": args.width,
        "latent_dim": args.latent_dim,
        "clock": "process CPU time" if device.type == "cpu" else "wall",
        "threads": args.threads if device.type == "cpu" else None,
        "warmup": args.warmup,
        "block": args.block,
        "repeats": args.repeats,
        **versions(),
        "rows": rows,
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

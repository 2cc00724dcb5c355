"""Reproduction: the VAE's test negative log-likelihood on binarized MNIST, importance-sampled with k = 5000.

Burda et al., "Importance Weighted Autoencoders", ICLR 2016, Table 1: a VAE with one stochastic layer
(50 latents), trained with k = 1, reaches 86.76 nats on the binarized MNIST test set, with the estimator
log p(x) ~ log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), k = 5000
(lightning_genae.metrics.likelihood). Each seed trains the framework's conv VAE through run.py on
`--data binarized_mnist` (training pixels binarized anew at every draw, test pixels once from a fixed seed)
with the Bernoulli decoder (`--recon-loss bce`) and `--latent-dim 50` for `--steps` iterations; then the
estimate is taken on the final weights over the test images: all 10,000, or the first `--test-images` of a
fixed seeded permutation of them (the same images for every seed and run). With `--budget-points`, the
first seed is also scored part-way, at each of those iterations, and resumed to `--steps` from there, which
shows how the figure moves with the training budget. With `--cheap-k`, every test image is scored at that
k and the mean is corrected by k = `--k` on `--corrected-images` of them, a fixed seeded subset: the same
expected figure as k = `--k` on every image, with a standard error from the subset (for the CPU, where
k = 5,000 on all 10,000 images takes about 4.6 hours; `subset_corrected_mean` in
lightning_genae.metrics.likelihood). `--score-only` scores runs already trained to `--steps`. A run saves
its checkpoint every `--ckpt-every` iterations; the same command given again continues a stopped run from
it, and scores a finished one without training it again. The paper
trained its VAE for 3,280 passes over the data (batch 20). The networks are the family's default, the
framework's shared conv nets; `-- --vae-nets paper` trains the paper's own (fully connected, two
deterministic layers of 200 tanh units each way). Options after `--` go to every run.py run as they are.

    python bench/reproduce_vae.py --data-dir DATA [--seeds 0 1 2] [--steps 5000] [--batch-size 64] \
        [--test-images 10000] [--budget-points 1000 | --lr-schedule cosine] [--k 5000] \
        [--cheap-k 100 --corrected-images 500] [--ckpt-every 5000] [--score-only] [--threads 2] \
        [--output runs/reproduce_vae] [--device cuda] [-- --vae-nets paper]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import torch
from bench_runs import device as bench_device
from bench_runs import distinct
from child_run import run_command, stop_on_failure

from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.datamodules import ImageDataModule, build_datamodule
from lightning_genae.datamodules.splits import FIXED_SPLIT_SEED, seeded_order
from lightning_genae.errors import ConfigError, GenaeError
from lightning_genae.experiment.arguments import build_parser as run_parser
from lightning_genae.experiment.arguments import command_line_values
from lightning_genae.experiment.config import RunConfig, resume_conflicts
from lightning_genae.experiment.resolve import resolve
from lightning_genae.metrics.likelihood import subset_corrected_mean
from lightning_genae.models import MODELS
from lightning_genae.plugin_options import flag
from lightning_genae.run_files import last_checkpoint
from lightning_genae.spread import mean_std

PUBLISHED = 86.76
# Images per call of the estimator: its draws are chunked so one decoder call holds about 8,192 images.
IMAGES_PER_CALL = 16
# Stream of `seeded_order` that picks the test subset.
SUBSET_STREAM = 3
# The cheap estimate's draws come from the run seed plus this, apart from the k = --k estimate's.
CHEAP_DRAWS_OFFSET = 1_000_003


def run_options(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The options that define each seed's run, as run.py's configuration names them."""
    return {
        "model": "vae", "data": "binarized_mnist", "recon_loss": "bce", "latent_dim": args.latent_dim,
        "batch_size": args.batch_size, "seed": seed, "lr_schedule": args.lr_schedule,
    }  # fmt: skip


def train(seed: int, steps: int, args: argparse.Namespace, output: Path) -> Path:
    """Train through run.py, the product's own path, to `steps`, continuing the run's last checkpoint where
    one exists (a budget point, or a run stopped part-way); return the run folder."""
    command = [sys.executable, "run.py", "--data-dir", args.data_dir]
    for name, value in run_options(seed, args).items():
        command += [flag(name), str(value)]
    command += [
        "--max-steps", str(steps), "--eval-every", str(steps),
        "--ckpt-every", str(min(steps, args.ckpt_every)), "--eval-samples", str(args.eval_samples),
        "--no-test-split", "--output", str(output), *args.run_args,
    ]  # fmt: skip
    if last_checkpoint(output).is_file():
        command += ["--resume", "last"]
    stop_on_failure(run_command(command), f"seed {seed}")
    return output


def trained_to(run_dir: Path, flag_name: str) -> tuple[int, dict[str, Any]] | None:
    """Iterations `run_dir`'s last checkpoint holds and its stored configuration; None without one."""
    path = last_checkpoint(run_dir)
    if not path.is_file():
        return None
    checkpoint = RunCheckpoint.load(path, flag_name)
    return checkpoint.iteration(1), checkpoint.stored_config(flag_name)


def reproduction_config(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The configuration run.py gives the seed's run, every default filled, as a checkpoint stores it."""
    given = {
        **run_options(seed, args),
        "data_dir": args.data_dir,
        "eval_samples": args.eval_samples,
        **command_line_values(run_parser(), args.run_args),
    }
    return resolve(RunConfig.from_dict({**given, "test_split": False})).config.to_dict()


# The script's own flags among a run's options: a conflict in these alone is mended by giving them.
SCRIPT_FLAGS = ("--batch-size", "--latent-dim", "--lr-schedule", "--data-dir")
# Options run.py lets a resume change that still define a reproduction's figure.
DEFINING_ON_RESUME = ("lr", "precision", "max_epochs")


def run_conflicts(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """`--width 64 (checkpoint: 32)` for each option the run's checkpoint records otherwise than the
    reproduction's run would: run.py's comparison of a resume, and the learning rate, precision and epochs
    it lets a resume change. A moved data folder is run.py's to check, by content, where the run trains on."""
    conflicts = resume_conflicts(stored, wanted)
    for name in DEFINING_ON_RESUME:
        if name in stored and stored[name] != wanted.get(name):
            conflicts.append(f"{flag(name)} {wanted.get(name)} (checkpoint: {stored[name]})")
    return conflicts


def not_ready(run_dir: Path, seed: int, args: argparse.Namespace, first_stop: int) -> str | None:
    """Why the run in `run_dir` cannot be scored at --steps (with --score-only) or trained to `first_stop`
    and on to --steps, or None if it can."""
    flag_name = "--score-only" if args.score_only else "--output"
    try:
        found = trained_to(run_dir, flag_name)
        wanted = reproduction_config(seed, args)
    except ConfigError as error:
        return str(error)
    path = last_checkpoint(run_dir)
    if found is None:
        if args.score_only:
            return f"--score-only: {path} does not exist; train the run first (drop --score-only)"
        if run_dir.is_dir() and any(run_dir.iterdir()):
            # A run stopped before its first checkpoint: there is nothing to continue, and its files are
            # not this command's to delete.
            return (
                f"--output: {run_dir} holds a run without {path.name} to continue; "
                "remove it, or pass another --output"
            )
        return None
    iteration, stored = found
    # A run of a version without --lr-schedule trained at the constant rate.
    stored = {"lr_schedule": "constant", **stored}
    conflicts = run_conflicts(stored, wanted)
    if conflicts:
        settable = all(conflict.split()[0] in SCRIPT_FLAGS for conflict in conflicts)
        flags = " and ".join(conflict.split()[0] for conflict in conflicts)
        fix = "pass another --output"
        if settable:
            fix = f"give the script the run's own {flags}, or {fix}"
        return f"{flag_name}: {path} is another run than this reproduction: {', '.join(conflicts)}; {fix}"
    where = f"{path} is at iteration {iteration}"
    if args.score_only and iteration != args.steps:
        return f"--score-only: {where}, not --steps {args.steps}; pass --steps {iteration}"
    if iteration > args.steps:
        return f"--output: {where}, past --steps {args.steps}; pass another --output"
    if iteration > first_stop:
        reachable = sorted({point for point in args.budget_points if iteration <= point < args.steps})
        keep = (
            f"keep only --budget-points {' '.join(map(str, reachable))}"
            if reachable
            else "drop --budget-points"
        )
        then = "continue it" if iteration < args.steps else "score it"
        return (
            f"--output: {where}, past --budget-points {first_stop}, whose score cannot be taken again; "
            f"{keep} to {then}, or pass another --output"
        )
    annealed_at = stored.get("max_steps")
    if args.lr_schedule != "constant" and annealed_at != args.steps:
        # Continued to another length, its learning rate would jump back up from where it annealed.
        return (
            f"--output: {path} anneals its learning rate to 0 at iteration {annealed_at}; pass --steps "
            f"{annealed_at}, or another --output"
        )
    return None


def test_images(datamodule: ImageDataModule, count: int) -> torch.Tensor:
    """The binarized test images in [-1, 1]: all of them, or `count` of a fixed seeded permutation."""
    images, _ = datamodule.split_tensors("test")
    if count < len(images):
        images = images[torch.from_numpy(seeded_order(len(images), FIXED_SPLIT_SEED, SUBSET_STREAM)[:count])]
    return datamodule.to_model_range(images)


def per_image_log_likelihood(
    model: torch.nn.Module, images: torch.Tensor, k: int, generator: torch.Generator, label: str
) -> torch.Tensor:
    """Importance-sampled log p(x) of each image [N] (float64, on the CPU), with a progress line about every
    10 s."""
    values, started, shown = [], time.time(), 0.0
    device = generator.device
    for start in range(0, len(images), IMAGES_PER_CALL):
        batch = images[start : start + IMAGES_PER_CALL].to(device)
        values.append(model.log_likelihood(batch, k, generator).cpu())
        done = start + len(batch)
        if time.time() - shown >= 10 or done == len(images):
            shown = time.time()
            so_far = -torch.cat(values).mean().item()
            print(
                f"  {label}, k = {k}: {done}/{len(images)} images, NLL so far {so_far:.2f}, "
                f"{shown - started:.0f} s",
                flush=True,
            )
    return torch.cat(values)


def restore_model(run_dir: Path, device: torch.device) -> torch.nn.Module:
    """The run's final weights (its last checkpoint), in evaluation mode on `device`."""
    checkpoint = RunCheckpoint.load(last_checkpoint(run_dir), "--checkpoint")
    return checkpoint.restore(MODELS["vae"].module, "--checkpoint").eval().to(device)


def test_nll(
    run_dir: Path, images: torch.Tensor, k: int, seed: int, label: str, device: torch.device
) -> float:
    """Mean importance-sampled NLL (nats per image) of the run's last checkpoint. The draws come from a
    generator on `device` seeded with `seed`: the CPU and a GPU give different draws, hence estimates that
    differ within the estimator's noise."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return (
        -per_image_log_likelihood(restore_model(run_dir, device), images, k, generator, label).mean().item()
    )


def corrected_test_nll(
    run_dir: Path, images: torch.Tensor, args: argparse.Namespace, seed: int, label: str, device: torch.device
) -> tuple[float, float]:
    """The k = `args.k` NLL over all `images`, with its standard error, from k = `args.cheap_k` on every image
    and k = `args.k` on the first `args.corrected_images` of the fixed seeded permutation
    (metrics.likelihood.subset_corrected_mean)."""
    model = restore_model(run_dir, device)
    subset = torch.from_numpy(
        seeded_order(len(images), FIXED_SPLIT_SEED, SUBSET_STREAM)[: args.corrected_images]
    )
    cheap_generator = torch.Generator(device=device).manual_seed(seed + CHEAP_DRAWS_OFFSET)
    cheap = per_image_log_likelihood(model, images, args.cheap_k, cheap_generator, f"{label}, every image")
    costly_generator = torch.Generator(device=device).manual_seed(seed)
    costly = per_image_log_likelihood(model, images[subset], args.k, costly_generator, f"{label}, the subset")
    log_likelihood, standard_error = subset_corrected_mean(cheap, subset, costly)
    print(
        f"  {label}: NLL at k = {args.cheap_k} over all {len(images)} images {-cheap.mean().item():.2f}; "
        f"on the {len(subset)}-image subset k = {args.cheap_k} {-cheap[subset].mean().item():.2f}, "
        f"k = {args.k} {-costly.mean().item():.2f}",
        flush=True,
    )
    return -log_likelihood, standard_error


class OneLineErrorParser(argparse.ArgumentParser):
    """A refusal is one line naming its fix, without argparse's usage block, and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=5000, help="training iterations per seed")
    parser.add_argument("--batch-size", type=int, default=64, help="the runs' --batch-size")
    parser.add_argument("--budget-points", type=int, nargs="*", default=[],
                        help="iterations below --steps at which the first seed is also scored")  # fmt: skip
    parser.add_argument("--k", type=int, default=5000, help="importance samples per image")
    parser.add_argument("--test-images", type=int, default=10_000,
                        help="test images scored: all 10,000, or a fixed seeded subset of N")  # fmt: skip
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--eval-samples", type=int, default=1000,
                        help="images per generative metric of the runs' own validation")  # fmt: skip
    parser.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                        help="the runs' --lr-schedule (cosine anneals to 0 at --steps)")  # fmt: skip
    parser.add_argument("--cheap-k", type=int, default=0,
                        help="score every test image at this k, corrected by k = --k on --corrected-images "
                        "of them (0: k = --k on every image)")  # fmt: skip
    parser.add_argument("--corrected-images", type=int, default=None,
                        help="images of the fixed seeded test subset that --cheap-k's correction scores "
                        "at --k [default: 500]")  # fmt: skip
    parser.add_argument("--ckpt-every", type=int, default=5000,
                        help="iterations between a run's checkpoints; given again, the command continues a "
                        "stopped run from its last one")  # fmt: skip
    parser.add_argument("--score-only", action="store_true",
                        help="score the runs in --output trained to --steps; train nothing")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the estimate")
    parser.add_argument("--output", type=Path, default=Path("runs/reproduce_vae"))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the estimate runs (auto: a GPU if there is one)")  # fmt: skip
    parser.add_argument("run_args", nargs="*",
                        help="after --: options passed to every run.py run (--vae-nets paper)")  # fmt: skip
    return parser


def parse_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The command line, its combinations checked (each refusal one line, exit 2)."""
    args = parser.parse_args()
    # One run scored twice would count as two seeds with no spread.
    distinct(parser, args.seeds, "--seeds")
    if args.lr_schedule != "constant" and args.budget_points:
        # A run stopped part-way would anneal to 0 there: it would not be a part of the longer run.
        parser.error(
            "--budget-points scores one run part-way, which a --lr-schedule other than constant "
            "anneals to 0 at that point; drop one of them"
        )
    for name in ("steps", "k", "test_images"):
        if getattr(args, name) < 1:
            parser.error(f"{flag(name)} must be at least 1, got {getattr(args, name)}")
    if args.cheap_k and not 1 <= args.cheap_k < args.k:
        parser.error(f"--cheap-k must be between 1 and --k ({args.k}), below it; got {args.cheap_k}")
    if args.corrected_images is not None and not args.cheap_k:
        parser.error("--corrected-images sizes --cheap-k's correction; give --cheap-k too, or drop it")
    if args.cheap_k and args.corrected_images is None:
        args.corrected_images = 500
    bench_device(parser, args.device)  # cuda where none is visible: refused here, before any run is checked
    if args.ckpt_every < 1:
        parser.error(f"--ckpt-every must be at least 1, got {args.ckpt_every}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.score_only and args.budget_points:
        parser.error("--score-only scores each run as it is; --budget-points would train it; drop one")
    return args


def score(
    run_dir: Path, images: torch.Tensor, args: argparse.Namespace, seed: int, label: str, device: torch.device
) -> tuple[float, float | None]:
    """The run's test NLL, and the subset correction's standard error where --cheap-k asks for one."""
    started = time.time()
    if args.cheap_k:
        nll, standard_error = corrected_test_nll(run_dir, images, args, seed, label, device)
        error = f" ± {standard_error:.2f} (the subset correction's standard error)"
    else:
        nll, standard_error = test_nll(run_dir, images, args.k, seed, label, device), None
        error = ""
    print(
        f"{label} iterations: test NLL {nll:.2f}{error} nats, scored in {time.time() - started:.0f} s",
        flush=True,
    )
    return nll, standard_error


def main() -> None:
    parser = build_parser()
    args = parse_arguments(parser)
    # Every run is checked before any is trained or scored: each takes minutes to hours.
    points = sorted(p for p in args.budget_points if 0 < p < args.steps)
    for index, seed in enumerate(args.seeds):
        run_dir = args.output / f"vae-seed{seed}"
        first_stop = points[0] if points and index == 0 else args.steps
        if problem := not_ready(run_dir, seed, args, first_stop):
            parser.error(problem)
    torch.set_num_threads(args.threads)
    device = bench_device(parser, args.device)
    # Full float32 arithmetic for the estimate: cuDNN's convolutions would otherwise run in TF32 (10-bit
    # mantissa), whose error in the logits adds up over 784 pixels and 5,000 draws.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    datamodule = build_datamodule("binarized_mnist", data_dir=args.data_dir)
    try:
        datamodule.prepare_data()
    except GenaeError as error:  # data missing or unreadable: one line, before anything trains
        parser.error(str(error))
    images = test_images(datamodule, args.test_images)
    if args.cheap_k and not 2 <= args.corrected_images < len(images):
        parser.error(f"--corrected-images must be 2 or more and below the {len(images)} test images scored")
    training_images = len(datamodule.split_tensors("train")[0])
    scope = "all" if len(images) == 10_000 else "a fixed seeded subset of"
    print(f"test NLL over {scope} {len(images)} binarized test images, k = {args.k}, on {device}", flush=True)
    if args.run_args:
        print(f"  run.py options {' '.join(args.run_args)}", flush=True)
    if args.cheap_k:
        print(
            f"  estimated from k = {args.cheap_k} on every image, corrected by k = {args.k} on "
            f"{args.corrected_images} of them (a fixed seeded subset)",
            flush=True,
        )
    results: list[float] = []
    # The subset correction's standard error of each seed's figure: every seed is corrected on the same
    # images, so this error is shared by the seeds and does not show in their spread.
    standard_errors: list[float] = []
    curve: list[tuple[int, float]] = []
    for index, seed in enumerate(args.seeds):
        run_dir = args.output / f"vae-seed{seed}"
        for step in [*(points if index == 0 else []), args.steps]:
            found = trained_to(run_dir, "--output")
            done = found[0] if found else 0
            if not args.score_only and done < step:
                started = time.time()
                begun = f", continuing its checkpoint at {done}" if done else ""
                print(f"seed {seed}: training to iteration {step}{begun}", flush=True)
                train(seed, step, args, run_dir)
                print(f"seed {seed}: trained to {step} in {time.time() - started:.0f} s", flush=True)
            elif not args.score_only:
                print(f"seed {seed}: {last_checkpoint(run_dir)} is at iteration {step} already", flush=True)
            nll, standard_error = score(run_dir, images, args, seed, f"seed {seed} at {step}", device)
            if index == 0:
                curve.append((step, nll))
        results.append(nll)
        if standard_error is not None:
            standard_errors.append(standard_error)
    ours = mean_std(results, ".2f")
    if standard_errors:
        each = " / ".join(f"{error:.2f}" for error in standard_errors)
        ours += f" (the subset correction's standard error {each})"
    scored = f"{len(images)} test images"
    if args.cheap_k:
        scored += f" at k = {args.cheap_k}, corrected by k = {args.k} on {args.corrected_images}"
    print(f"\nbinarized MNIST test NLL (nats, lower is better), k = {args.k}, {scored}")
    print(f"seed {args.seeds[0]} by budget: " + ", ".join(f"{s} it: {v:.2f}" for s, v in curve))
    passes = args.steps * args.batch_size / training_images
    print(
        f"ours: {ours} (n={len(results)}), {args.steps} iterations x batch {args.batch_size} "
        f"({passes:.1f} passes); published {PUBLISHED}"
        + (f"; run.py options {' '.join(args.run_args)}" if args.run_args else "")
    )
    print(
        "| Burda et al. 2016, Table 1 (VAE, 1 stochastic layer, k=1) | binarized MNIST test NLL, "
        f"IS k={args.k}, "
        f"{scored} | {PUBLISHED} | {ours} ({len(results)}) | "
        f"{args.steps} iterations x batch {args.batch_size} |"
    )


if __name__ == "__main__":
    main()

"""Reproduction protocols: one published row per paper, run through the framework's own grid runner.

Each protocol names the paper, its table, the published figure, the data amount, the image size, the step
budget and the metric with its sample counts, then trains the arms (e.g. without and with DiffAugment) over
`--seeds` with `run.py`'s grid and prints the published figure beside ours (mean ± std over the seeds, n).
Our networks are the framework's DCGAN-class nets, not the papers' BigGAN / StyleGAN2, so what compares is
the protocol and the relative gain of the augmentation, never the absolute FID. Offline, the Fréchet
distance uses the classifier trained on the dataset (`fd_classifier`); `--inception-weights FILE` gives
the Inception network the published FIDs use (`fid_inception`). Every table says which backbone it used.

    python bench/reproduce_protocols.py --paper diffaug --data-dir DATA --device cuda --seeds 0,1,2
    python bench/reproduce_protocols.py --paper ada --data-dir DATA --device cuda \
        --inception-weights weights-inception-2015-12-05-6726825d.pth
    python bench/reproduce_protocols.py --paper vaegan --data-dir DATA --device cuda

Without the dataset under `--data-dir` it prints the table with an empty "ours" cell and one line saying
what is missing, and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning_genae.errors import ConfigError
from lightning_genae.experiment.cli import main as run_main
from lightning_genae.spread import mean_std

CIFAR_FILES = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)) + (
    "cifar-10-batches-py/test_batch",
)
CELEBA_FILES = ("celeba/list_eval_partition.txt", "celeba/img_align_celeba")


@dataclass(frozen=True)
class Arm:
    """One condition of a protocol: the `--augment` value and the figure the paper published for it."""

    augment: str
    label: str
    published: str


@dataclass(frozen=True)
class Protocol:
    """One paper's row: what it measured, on what, and the framework's options that repeat it."""

    paper: str
    source: str  # table / figure and the reference code the numbers come from
    data: str
    needs: tuple[str, ...]  # files or folders under --data-dir
    data_amount: str
    image_size: int
    train_size: int | None
    published_budget: str
    steps: int
    batch_size: int
    published_metric: str
    eval_samples: int
    model: str
    arms: tuple[Arm, ...]
    differences: str
    options: tuple[str, ...] = ()
    # Without Inception weights: the dataset classifier's FD, or for unlabeled data (no classifier to
    # train) the test reconstruction error.
    offline_metric: str = "fd_classifier"


PROTOCOLS: dict[str, Protocol] = {
    "diffaug": Protocol(
        paper="Zhao et al. 2020, Differentiable Augmentation for Data-Efficient GAN Training",
        source="CIFAR-10 BigGAN rows (as in mit-han-lab/data-efficient-gans, DiffAugment-biggan-cifar)",
        data="cifar10",
        needs=CIFAR_FILES,
        data_amount="10% of the CIFAR-10 training set: 5,000 images",
        image_size=32,
        train_size=5000,
        published_budget="batch 50, 4 D steps per G step, 5,000 epochs of the 5,000 images (their script)",
        steps=100_000,
        batch_size=50,
        published_metric="FID (Inception), 10k generated images (fid10k), best checkpoint by FID",
        eval_samples=10_000,
        model="gan",
        arms=(
            Arm("none", "no augmentation", "39.78 (BigGAN)"),
            Arm("diffaug", "DiffAugment translation,cutout", "22.40 (BigGAN)"),
        ),
        differences="theirs: BigGAN, EMA generator; ours: the DCGAN of --model gan, one D step per G step",
        options=("--diffaug-policy", "translation,cutout"),
    ),
    "ada": Protocol(
        paper="Karras et al. 2020, Training Generative Adversarial Networks with Limited Data",
        source="CIFAR-10 record stated in the abstract, StyleGAN2 + ADA (NVlabs/stylegan2-ada-pytorch)",
        data="cifar10",
        needs=CIFAR_FILES,
        data_amount="the full CIFAR-10 training set: 50,000 images",
        image_size=32,
        train_size=None,
        published_budget="--cfg cifar of stylegan2-ada-pytorch; its README: 25,000 kimg or more to converge",
        steps=100_000,
        batch_size=64,
        published_metric="FID (Inception), 50k generated images vs the 50k training images (fid50k_full)",
        eval_samples=10_000,
        model="gan",
        arms=(
            Arm("none", "no augmentation", "-"),
            Arm("ada", "ADA (adaptive p, target r_t 0.6)", "2.42 (conditional StyleGAN2)"),
        ),
        differences=(
            "theirs: class-conditional StyleGAN2; ours: the unconditional DCGAN of --model gan, trained on "
            "45,000 images (5,000 kept for validation), FD over 10k generated vs 10k test images"
        ),
    ),
    "vaegan": Protocol(
        paper="Larsen et al. 2016, Autoencoding beyond pixels using a learned similarity metric",
        source="CelebA experiments (paper Section 3, Figures 3-4; andersbll/autoencoding_beyond_pixels)",
        data="celeba",
        needs=CELEBA_FILES,
        data_amount="the official CelebA training partition: 162,770 images",
        image_size=64,
        train_size=None,
        published_budget="not stated as a number of iterations",
        steps=50_000,
        batch_size=64,
        published_metric="none for unconditional samples (qualitative figures only)",
        eval_samples=10_000,
        model="vaegan",
        arms=(Arm("none", "VAE-GAN", "- (qualitative only)"),),
        differences=(
            "theirs: their own 64x64 conv nets, trained on 600,000 augmented draws (shifted, scaled, "
            "rotated and recoloured before the crop) of the training and validation partitions (182,637 "
            "images), each face smoothed before a bicubic resize; ours: the DCGAN-class nets of --model "
            "vaegan on the training partition as it is, the same 148x148 face crop, antialiased bilinear "
            "resize"
        ),
        offline_metric="mse",
    ),
}


def missing_data(protocol: Protocol, data_dir: Path) -> list[str]:
    """The protocol's files and folders absent under `data_dir` (checked before anything downloads)."""
    return [name for name in protocol.needs if not (data_dir / name).exists()]


def metric_name(protocol: Protocol, inception_weights: str | None) -> str:
    """The framework's name of the number reported; a Fréchet distance's name says its backbone."""
    return "fid_inception" if inception_weights else protocol.offline_metric


def run_command(protocol: Protocol, args: argparse.Namespace, root: Path) -> list[str]:
    """The `run.py` grid command of the protocol (every arm and seed), at the paper's sizes or --smoke's."""
    steps, eval_samples, train_size = protocol.steps, protocol.eval_samples, protocol.train_size
    sizes: list[str] = []
    if args.smoke:
        steps, eval_samples, train_size = args.smoke, 16, None
        sizes = ["--width", "8", "--latent-dim", "8", "--batch-size", "8"]
    else:
        sizes = ["--batch-size", str(protocol.batch_size)]
    command = [
        "--model", protocol.model,
        "--data", protocol.data,
        "--data-dir", str(args.data_dir),
        "--augment", ",".join(arm.augment for arm in protocol.arms),
        "--seeds", args.seeds,
        "--max-steps", str(steps),
        "--eval-samples", str(eval_samples),
        "--eval-every", str(max(1, steps // 10)),
        "--image-every", str(max(1, steps // 10)),
        "--ckpt-every", str(steps),
        "--accelerator", "gpu" if args.device == "cuda" else args.device,
        "--output", str(root),
        *sizes,
        *protocol.options,
    ]  # fmt: skip
    if train_size is not None:
        command += ["--train-size", str(train_size)]
    if args.inception_weights:
        command += ["--backbone", "inception", "--inception-weights", args.inception_weights]
    return command


def collect(root: Path, metric: str, seeds: set[int]) -> dict[str, list[float]]:
    """Each arm's final test (else validation) value of `metric`, one per finished seed of `seeds`."""
    values: dict[str, list[float]] = {}
    for path in sorted(root.rglob("summary.json")):
        summary = json.loads(path.read_text())
        if summary["seed"] not in seeds:  # an earlier command in the same root ran other seeds
            continue
        final = summary.get("final_metrics", {})
        value = final.get(f"test/{metric}", final.get(f"val/{metric}"))
        if value is not None:
            values.setdefault(summary["augment"], []).append(float(value))
    return values


def format_ours(values: list[float]) -> str:
    if not values:
        return ""
    return f"{mean_std(values, '.2f')} (n={len(values)})"


def table(protocol: Protocol, metric: str, ours: dict[str, list[float]], note: str) -> str:
    """The protocol's conditions, then one line per arm: published figure beside ours."""
    backbone = {
        "fid_inception": "Inception, as published FIDs",
        "fd_classifier": f"classifier trained on {protocol.data}; Inception FIDs do not compare",
        "mse": "test reconstruction error in [-1, 1]; an Inception FID needs --inception-weights",
    }[metric]
    lines = [
        f"{protocol.paper}",
        f"  source: {protocol.source}",
        f"  data: {protocol.data_amount}, {protocol.image_size}x{protocol.image_size}",
        f"  published budget: {protocol.published_budget}; ours: {protocol.steps:,} iterations, "
        f"batch {protocol.batch_size}",
        f"  published metric: {protocol.published_metric}",
        f"  our metric: {metric} ({backbone}), {protocol.eval_samples:,} generated vs up to "
        f"{protocol.eval_samples:,} test images",
        f"  models: {protocol.differences}",
        "",
        f"| arm | published | ours ({metric}, mean ± std over seeds) |",
        "|---|---|---|",
    ]
    for arm in protocol.arms:
        lines.append(f"| {arm.label} | {arm.published} | {format_ours(ours.get(arm.augment, []))} |")
    if note:
        lines += ["", note]
    return "\n".join(lines)


def seed_list(text: str) -> str:
    """`--seeds`: a comma list of integers, checked before any run starts."""
    try:
        [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers, e.g. 0,1,2") from None
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--paper", required=True, choices=sorted(PROTOCOLS))
    parser.add_argument("--data-dir", required=True, type=Path, help="folder holding the paper's dataset")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--seeds", default="0,1,2", type=seed_list)
    parser.add_argument("--inception-weights", default=None, help="local torch-fidelity InceptionV3 weights")
    parser.add_argument("--output", type=Path, default=None, help="grid root (default runs/protocol-PAPER)")
    # Tests only: a few iterations with tiny nets instead of the protocol's sizes.
    parser.add_argument("--smoke", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    protocol = PROTOCOLS[args.paper]
    metric = metric_name(protocol, args.inception_weights)
    missing = missing_data(protocol, args.data_dir)
    if missing:
        print(table(protocol, metric, {}, ""))
        print(
            f"error: {protocol.data} not found under {args.data_dir} ({missing[0]} and "
            f"{len(missing) - 1} more missing); pass --data-dir pointing at the folder holding "
            f"{protocol.needs[0].split('/')[0]}/ and run with --device cuda on a GPU",
            file=sys.stderr,
        )
        return ConfigError.exit_code
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            # Every cell would fail with run.py's own line, which names run.py's --accelerator.
            print(
                "error: --device cuda: no GPU is visible here; the protocols' budgets are for a GPU, and "
                "--device cpu runs them on the CPU",
                file=sys.stderr,
            )
            return ConfigError.exit_code
    root = args.output or Path("runs") / f"protocol-{args.paper}"
    command = run_command(protocol, args, root)
    print("python run.py " + " ".join(command), flush=True)
    code = run_main(command)
    ours = collect(root, metric, {int(seed) for seed in args.seeds.split(",")})
    notes = [f"run.py exited {code}: cells without a summary are missing from ours"] if code else []
    if args.smoke:
        notes.append(f"smoke run: {args.smoke} iterations with tiny nets, not the protocol's sizes")
    note = "\n".join(notes)
    print(table(protocol, metric, ours, note))
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Reproduction: the adversarial autoencoder and the GAN on the AAE paper's MNIST Parzen-window likelihood.

Makhzani et al., "Adversarial Autoencoders", 2015, Table 1 (MNIST: AAE 340 ± 2, GAN 225 ± 2), with the
estimator of Goodfellow et al. 2014 and goodfeli/adversarial's parzen_ll.py (lightning_genae.metrics.parzen):
each model trains through run.py on MNIST for `--steps` iterations per seed, then 10,000 samples are drawn
(pixels in [0, 1]); the bandwidth is the reference grid's value (logspace(-1, 0, 10)) with the best mean
log-likelihood of the validation split (the fixed 5,000-image carve-out of the training set; the reference
holds out the last 10,000 training images), and the figure is the mean log-likelihood of the 10,000 test
images. Beside it: the run's own test fd_classifier. The networks are the family's defaults, the
framework's shared conv nets; `-- --aae-nets paper` trains the AAE on the AAE paper's MNIST nets (fully
connected, two hidden layers of 1,000 ReLU units each, latent 8), and with `--aae-training paper
--aae-prior-std 5 --batch-size 100` under its appendix A.1's training (SGD with momentum per phase, the
paper's initialisation, output, cost and prior), `-- --gan-nets paper --latent-dim 100`
the GAN on the GAN paper's (goodfeli/adversarial mnist.yaml: an MLP generator, a maxout discriminator),
and with `--gan-training paper --batch-size 100` under that file's training (SGD with momentum).

    python bench/reproduce_parzen.py --data-dir DATA [--families aae,gan] [--seeds 0 1 2] [--steps 2000]
    python bench/reproduce_parzen.py --data-dir DATA --families aae --steps 10000 -- --aae-nets paper
    python bench/reproduce_parzen.py --data-dir DATA --families aae --steps 33000 -- \
        --aae-nets paper --aae-training paper --aae-prior-std 5 --batch-size 100
    python bench/reproduce_parzen.py --data-dir DATA --families gan --steps 30000 -- \
        --gan-nets paper --gan-training paper --latent-dim 100 --batch-size 100
    python bench/reproduce_parzen.py ... --steps 60000 --extend -- ...   # the same runs, 30,000 more
    python bench/reproduce_parzen.py ... --steps 70000 --extend -- ... --aae-adversarial-weight 0.05

Run again, the same command scores its finished runs as they are and continues stopped ones
(bench/bench_runs.py). With `--extend`, options after `--` must be the runs' own, except those a resumed
run may change (a learning rate, the AAE's adversarial weight, raised for the continued stretch; neither
under `--aae-training paper` or `--gan-training paper`, whose rates are the papers').
Options after `--` go to every run.py run as they are (a family option, a learning rate), e.g.
`python bench/reproduce_parzen.py --data-dir DATA --families aae --seeds 0 --output runs/w1 --
--aae-adversarial-weight 1`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bench_runs import PlannedRun, check_planned, distinct, names, prepared, train_planned
from bench_runs import device as bench_device

from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.datamodules import build_datamodule
from lightning_genae.metrics.parzen import parzen_log_likelihood, select_bandwidth
from lightning_genae.models import MODELS
from lightning_genae.plugin_loading import load_plugins
from lightning_genae.run_files import last_checkpoint
from lightning_genae.spread import mean_std

PUBLISHED = {"aae": (340.0, 2.0), "gan": (225.0, 2.0)}
SAMPLES = 10_000
SAMPLE_CHUNK = 500


def planned(family: str, seed: int, args: argparse.Namespace) -> PlannedRun:
    """The run.py run (the product's own path) of one family and seed; with `args.extend`, the run already
    in its folder continued to `args.steps` iterations instead of a new one."""
    folder = args.output / f"{family}-seed{seed}"
    options = [
        "--model", family, "--data", "mnist", "--data-dir", args.data_dir, "--seed", str(seed),
        "--max-steps", str(args.steps), "--eval-every", str(args.steps), "--output", str(folder),
        *args.run_args,
    ]  # fmt: skip
    return PlannedRun(options, folder, args.steps, args.extend)


def in_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Model-range images [-1, 1] -> pixels in [0, 1], the range the estimator reads."""
    return ((images.clamp(-1, 1) + 1) / 2).float()


@torch.no_grad()
def prior_samples(model: torch.nn.Module, seed: int) -> torch.Tensor:
    """The model's 10,000 samples in [0, 1], drawn in chunks of 500 from one generator seeded with `seed`
    (on the host, so a seed gives the same draws on any device)."""
    generator = torch.Generator().manual_seed(seed)
    return in_unit_range(
        torch.cat([model.sample(SAMPLE_CHUNK, generator) for _ in range(SAMPLES // SAMPLE_CHUNK)])
    )


def samples_of(run_dir: Path, family: str, seed: int, device: torch.device) -> torch.Tensor:
    """`prior_samples` of the run's last weights, on `device`."""
    checkpoint = RunCheckpoint.load(last_checkpoint(run_dir), "--checkpoint")
    model = checkpoint.restore(MODELS[family].module, "--checkpoint").eval().to(device)
    return prior_samples(model, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--families", default="aae,gan")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000, help="training iterations per run")
    parser.add_argument("--output", type=Path, default=Path("runs/reproduce_parzen"))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where sampling and the estimate run (auto: a GPU if there is one)")  # fmt: skip
    parser.add_argument("--extend", action="store_true",
                        help="continue each seed's run in --output to --steps iterations (run.py --resume "
                        "last; the same options after --): a longer budget of the same run")  # fmt: skip
    parser.add_argument("run_args", nargs="*", help="after --: options passed to every run.py run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_plugins()  # a plug-in's families are names run.py takes
    families = names(parser, args.families, list(MODELS), "--families")
    distinct(parser, args.seeds, "--seeds")
    if args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")
    device = bench_device(parser, args.device)
    # Every run's folder and the data, checked before any run trains.
    runs = {(family, seed): planned(family, seed, args) for family in families for seed in args.seeds}
    check_planned(parser, list(runs.values()))
    datamodule = build_datamodule("mnist", data_dir=args.data_dir)
    prepared(parser, datamodule)
    real = {split: (datamodule.split_tensors(split)[0].float() / 255).to(device) for split in ("val", "test")}
    rows: dict[str, list[dict[str, float]]] = {}
    for family in families:
        for seed in args.seeds:
            started = time.time()
            run_dir = train_planned(runs[family, seed], f"{family} seed {seed}")
            samples = samples_of(run_dir, family, seed, device)
            sigma, _ = select_bandwidth(samples, real["val"])
            test = parzen_log_likelihood(samples, real["test"], sigma)
            summary = json.loads((run_dir / "summary.json").read_text())
            fd = summary["final_metrics"].get("test/fd_classifier")
            row = {"ll": test.mean().item(), "se": (test.std() / len(test) ** 0.5).item(), "sigma": sigma,
                   "fd": fd}  # fmt: skip
            rows.setdefault(family, []).append(row)
            print(
                f"{family} seed {seed}: Parzen LL {row['ll']:.1f} ± {row['se']:.1f} (sigma {sigma:.3f}), "
                f"test fd_classifier {fd}, {time.time() - started:.0f} s",
                flush=True,
            )
    print(
        f"\nMNIST Parzen-window log-likelihood (nats, higher is better), {SAMPLES} samples, "
        f"{len(real['test'])} test images, {args.steps} iterations, seeds {args.seeds}"
        + (f", run.py options {' '.join(args.run_args)}" if args.run_args else "")
    )
    print(f"{'model':8}{'published':>14}{'ours (mean ± std over seeds)':>32}{'test fd_classifier':>28}")
    for family, values in rows.items():
        lls = [row["ll"] for row in values]
        fds = [row["fd"] for row in values if row["fd"] is not None]
        published = "{:.0f} ± {:.0f}".format(*PUBLISHED[family]) if family in PUBLISHED else "-"
        fd = f"{mean_std(fds, '.2f')} (n={len(fds)})" if fds else "-"
        ours = f"{mean_std(lls, '.1f')} (n={len(lls)})"
        print(f"{family:8}{published:>14}{ours:>32}{fd:>28}")


if __name__ == "__main__":
    main()

"""Reproduction: the recurrent autoencoder family (rae, rae --variational) on TimeGAN's Sines benchmark.

Yoon et al., "Time-series Generative Adversarial Networks", NeurIPS 2019, Table 2 (Sines). Each model is
trained by run.py on `--data timegan_sines` (the 7,000 training series) for `--steps` iterations per seed;
then, as TimeGAN does, as many series are generated as the real set holds (10,000), put back into the
data's [0, 1] units, and scored against all 10,000 real series with TimeGAN's discriminative and
predictive scores (lightning_genae.metrics.timegan), each fitted `--repetitions` times per seed. The table
gives the published figures beside ours (mean ± std over seeds of each seed's mean over repetitions),
the predictive score of the real data itself (train on real, test on real; the paper's 0.094 checks the
metric) and, for the first seed, the scores of the models' reconstructions of the real series.

Beside TimeGAN's two scores, each seed reports what they may not see: the share of generated series with a
value outside the training split's per-channel range (the range recorded with the run's normaliser), the
framework's wide discriminative score (a GRU of metrics.sequences.WIDE_HIDDEN units,
`--repetitions` fits) and the fits' spread of every score. Each has its floor, printed once: the same figure
of the real series themselves (the out-of-range share of all real series; each discriminator telling one
seeded half of the real series from the other).

`--data sines` runs the same on the framework's own 5-channel sines (`--channels 5`, 3,000 series, as many
generated); TimeGAN's predictive score needs [0, 1] units there, so both sets are min-max scaled by the real
series' per-channel minimum and maximum, as TimeGAN's reference code does for its real-world data.

    python bench/reproduce_rae.py [--data timegan_sines|sines] [--seeds 0 1 2] [--steps 8000] \
        [--repetitions 10] [--floor-fits N] [--output runs/reproduce_rae]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
from bench_runs import PlannedRun, check_planned, distinct, train_planned

from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.datamodules.sequence import Normaliser
from lightning_genae.datamodules.sines import NUM_SERIES as SINES_SERIES
from lightning_genae.datamodules.sines import sine_series
from lightning_genae.datamodules.timegan_sines import timegan_sine_series
from lightning_genae.metrics.sequences import WIDE_HIDDEN, discriminative_score, out_of_range_share
from lightning_genae.metrics.timegan import (
    REPETITIONS,
    discriminative_score_timegan,
    predictive_score_timegan,
    timegan_scores,
)
from lightning_genae.models import MODELS
from lightning_genae.progress import PhaseProgress
from lightning_genae.run_files import last_checkpoint

# Table 2 of the paper, Sines column: mean ± std.
PUBLISHED = {
    "TimeGAN": ((0.011, 0.008), (0.093, 0.019)),
    "RCGAN": ((0.022, 0.008), (0.097, 0.001)),
    "C-RNN-GAN": ((0.229, 0.040), (0.127, 0.004)),
    "Original data": (None, (0.094, 0.001)),
}
VARIANTS = {"rae": [], "rae --variational": ["--variational"]}
# run.py's options of each dataset, and its real series (all of them, as TimeGAN scores).
DATA = {"timegan_sines": ["--data", "timegan_sines"], "sines": ["--data", "sines", "--channels", "5"]}
REAL = {"timegan_sines": timegan_sine_series, "sines": lambda: sine_series(SINES_SERIES, 24, 5)}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (n - 1) over seeds; no spread (NaN, printed n/a) for one seed."""
    mean = sum(values) / len(values)
    spread = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else math.nan
    return mean, math.sqrt(spread)


def planned(name: str, data: str, seed: int, steps: int, output: Path) -> PlannedRun:
    """The run.py run (the product's own path) of one variant and seed. Its last validation falls on its
    last step, so the deterministic form's code Gaussian saved in last.ckpt is fitted to the final weights."""
    folder = output / f"{name.replace(' --', '-')}-seed{seed}"
    options = [
        "--model", "rae", *DATA[data], "--seed", str(seed),
        "--max-steps", str(steps), "--eval-every", str(steps), "--output", str(folder), *VARIANTS[name],
    ]  # fmt: skip
    return PlannedRun(options, folder, steps)


def load(run_dir: Path) -> tuple[torch.nn.Module, Normaliser]:
    contents = RunCheckpoint.load(last_checkpoint(run_dir), "--checkpoint").contents
    hparams = dict(contents["hyper_parameters"])
    model = MODELS["rae"].module(hparams.pop("series_shape"), **hparams)
    model.load_state_dict(contents["state_dict"])
    normaliser = Normaliser.from_dict(json.loads((run_dir / "normaliser.json").read_text()))
    return model.eval(), normaliser


@torch.no_grad()
def generate(model: torch.nn.Module, normaliser: Normaliser, count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return normaliser.denormalise(torch.cat([model.sample(1000, generator) for _ in range(count // 1000)]))


@torch.no_grad()
def reconstruct(model: torch.nn.Module, normaliser: Normaliser, real: torch.Tensor) -> torch.Tensor:
    parts = [model.reconstruct(normaliser.normalise(real[i : i + 1000])) for i in range(0, len(real), 1000)]
    return normaliser.denormalise(torch.cat(parts))


def score_units(data: str, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Offset and scale into the units TimeGAN scores in: its Sines as generated ([0, 1], unscaled, as its
    reference code); other data by the real series' per-channel minimum and range (its MinMaxScaler)."""
    if data == "timegan_sines":
        return torch.zeros(real.shape[2]), torch.ones(real.shape[2])
    low = real.amin(dim=(0, 1))
    return low, real.amax(dim=(0, 1)) - low


def halves(real: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two seeded halves of the real series: a discriminator's real-against-real floor."""
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
    return real[order[: len(real) // 2]], real[order[len(real) // 2 :]]


def mean_pstd(values: list[float]) -> tuple[float, float]:
    """Mean and population std over fits, as TimeGANScores gives them."""
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def cell(value: tuple[float, float] | None) -> str:
    if value is None:
        return "-"
    return f"{value[0]:.3f} ± " + ("n/a" if math.isnan(value[1]) else f"{value[1]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=list(DATA), default="timegan_sines")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=8000, help="training iterations per run")
    parser.add_argument("--repetitions", type=int, default=REPETITIONS, help="fits of each score per seed")
    parser.add_argument(
        "--floor-fits", type=int, help="fits of the real data's own scores (default: --repetitions)"
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--output", type=Path, default=Path("runs/reproduce_rae"))
    args = parser.parse_args()
    distinct(parser, args.seeds, "--seeds")
    distinct(parser, args.variants, "--variants")
    args.floor_fits = args.floor_fits or args.repetitions
    for flag, value in (
        ("--steps", args.steps),
        ("--repetitions", args.repetitions),
        ("--floor-fits", args.floor_fits),
    ):
        if value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    runs = {
        (name, seed): planned(name, args.data, seed, args.steps, args.output)
        for name in args.variants
        for seed in args.seeds
    }
    # Every run's folder checked before the real data's own scores (minutes) and any training.
    check_planned(parser, list(runs.values()))
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    real = REAL[args.data]()
    low, scale = score_units(args.data, real)
    real_units = (real - low) / scale
    started = time.perf_counter()
    real_on_real = [predictive_score_timegan(real_units, real_units, seed) for seed in range(args.floor_fits)]
    print(f"real-on-real predictive ({args.floor_fits} fits): {cell(mean_std(real_on_real))}", flush=True)
    first, second = halves(real_units, 0)
    floors = {
        "discriminative": mean_pstd(
            [discriminative_score_timegan(first, second, seed) for seed in range(args.floor_fits)]
        ),
        "wide discriminative": mean_pstd(
            [
                discriminative_score(first, second, seed=seed, hidden=WIDE_HIDDEN)
                for seed in range(args.floor_fits)
            ]
        ),
    }
    print(
        f"real half against real half ({args.floor_fits} fits): discriminative "
        f"{cell(floors['discriminative'])}, wide discriminative {cell(floors['wide discriminative'])}",
        flush=True,
    )
    outside: dict[str, list[float]] = {}
    wide: dict[str, list[float]] = {}

    def fits(value: tuple[float, float]) -> tuple[float, float]:
        """A score's mean and spread over its fits; one fit has no spread (n/a, not 0)."""
        return (value[0], math.nan) if args.repetitions == 1 else value

    rows: dict[str, tuple[tuple[float, float] | None, tuple[float, float]]] = {}
    for name in args.variants:
        disc, pred = [], []
        for seed in args.seeds:
            run_dir = train_planned(runs[name, seed], f"{name} seed {seed}")
            model, normaliser = load(run_dir)
            generated = generate(model, normaliser, len(real), seed)
            train_range = torch.tensor([normaliser.low, normaliser.high])
            outside.setdefault(name, []).append(out_of_range_share(generated, train_range))
            if seed == args.seeds[0]:
                outside.setdefault("real", []).append(out_of_range_share(real, train_range))
            generated = (generated - low) / scale
            # TimeGAN's two scores and the wide discriminator, each fitted --repetitions times.
            progress = PhaseProgress(f"{name} seed {seed}: scoring", 3 * args.repetitions, "fit", interval=60)
            scores = timegan_scores(real_units, generated, args.repetitions, seed, on_fit=progress.advance)
            wide_fits = []
            for fit in range(args.repetitions):
                wide_fits.append(
                    discriminative_score(real_units, generated, seed=seed + fit, hidden=WIDE_HIDDEN)
                )
                progress.advance()
            wide.setdefault(name, []).append(sum(wide_fits) / len(wide_fits))
            disc.append(scores.discriminative_mean_std[0])
            pred.append(scores.predictive_mean_std[0])
            print(
                f"{name} seed {seed}: samples discriminative {cell(fits(scores.discriminative_mean_std))}, "
                f"predictive {cell(fits(scores.predictive_mean_std))}, wide discriminative "
                f"{cell(fits(mean_pstd(wide_fits)))} over {args.repetitions} fits; "
                f"outside the training range {outside[name][-1]:.2%}",
                flush=True,
            )
            if seed == args.seeds[0]:
                recon = timegan_scores(
                    real_units, (reconstruct(model, normaliser, real) - low) / scale, 1, seed
                )
                print(
                    f"{name} seed {seed}: reconstructions discriminative {recon.discriminative[0]:.3f}, "
                    f"predictive {recon.predictive[0]:.3f} (1 fit)",
                    flush=True,
                )
        rows[f"ours: {name} (n={len(args.seeds)})"] = (mean_std(disc), mean_std(pred))
    print(
        f"\n{args.data}: {len(real):,} real series {real.shape[1]}x{real.shape[2]}, as many generated; "
        f"ours: {args.steps} iterations, "
        f"seeds {args.seeds}, {args.repetitions} fits per score per seed; "
        f"{time.perf_counter() - started:.0f} s"
    )
    print(f"{'method':<28} {'discriminative':>16} {'predictive':>16}")
    for method, (disc_cell, pred_cell) in {**PUBLISHED, **rows}.items():
        print(f"{method:<28} {cell(disc_cell):>16} {cell(pred_cell):>16}")
    print(f"{'ours: original data':<28} {'-':>16} {cell(mean_std(real_on_real)):>16}")
    print(f"\n{'beside them':<28} {'outside range':>16} {'wide discrim.':>16}")
    for name in args.variants:
        share = mean_std(outside[name])
        print(
            f"{'ours: ' + name:<28} {f'{share[0]:.2%} ± {share[1]:.2%}':>16} {cell(mean_std(wide[name])):>16}"
        )
    print(f"{'floor: real series':<28} {outside['real'][0]:>16.2%} {cell(floors['wide discriminative']):>16}")
    print(
        f"floor of TimeGAN's discriminative score (real half vs real half): {cell(floors['discriminative'])}"
    )


if __name__ == "__main__":
    main()

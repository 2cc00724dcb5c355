"""How much of a deterministic rae's discriminative score on TimeGAN's Sines is its code density.

For each trained `rae` run that bench/reproduce_rae.py left (`--runs DIR`, folders `rae-seed<S>`), the same
weights decode 10,000 codes drawn from each density fitted to the codes of all 7,000 training series: a
mixture of K full-covariance Gaussians (scikit-learn's EM, K = 1 is one Gaussian), and the training codes
themselves (their decoding is a reconstruction: the level no density of codes can pass with this decoder).
`--fit-codes N ...` fits each mixture to a seeded N of the training codes instead, as a run fits its density
to at most `MAX_FIT_SERIES` (models/rae.py; the same subset for the same N). Each set is scored against the
10,000 real series with TimeGAN's discriminative score, `--fits` times, fit i seeded by i, or with
`--fit-seeds timegan` by `bench/reproduce_rae.py`'s stream (`timegan_scores`: the run seed's "timegan fit").

    python bench/rae_code_density.py --runs runs/reproduce_rae [--seeds 0 1 2] [--fits 2] \
        [--components 1 10 50] [--fit-codes 4096 7000] [--fit-seeds index|timegan]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.datamodules import build_datamodule
from lightning_genae.datamodules.sequence import Normaliser
from lightning_genae.datamodules.timegan_sines import timegan_sine_series
from lightning_genae.metrics.generative import seeded_subset
from lightning_genae.metrics.timegan import discriminative_score_timegan
from lightning_genae.models import MODELS
from lightning_genae.models.rae import code_mixture
from lightning_genae.run_files import last_checkpoint
from lightning_genae.seeding import int_seed

COUNT = 10_000


def load_weights(run_dir: Path) -> tuple[torch.nn.Module, Normaliser]:
    """The run's encoder and decoder; its own code density (refitted here) is not read."""
    contents = RunCheckpoint.load(last_checkpoint(run_dir), "--runs").contents
    hparams = dict(contents["hyper_parameters"])
    model = MODELS["rae"].module(hparams.pop("series_shape"), **hparams)
    weights = {name: value for name, value in contents["state_dict"].items() if not name.startswith("code_")}
    model.load_state_dict(weights, strict=False)
    normaliser = Normaliser.from_dict(json.loads((run_dir / "normaliser.json").read_text()))
    return model.eval(), normaliser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/reproduce_rae"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fits", type=int, default=2, help="fits of the score per sample set")
    parser.add_argument("--components", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument(
        "--fit-codes", type=int, nargs="+", help="training codes each mixture is fitted to (default: all)"
    )
    parser.add_argument("--fit-seeds", choices=["index", "timegan"], default="index")
    args = parser.parse_args()
    torch.set_num_threads(1)
    real = timegan_sine_series()
    train = build_datamodule("timegan_sines").split_tensors("train")[0]
    table: dict[str, list[float]] = {}
    for seed in args.seeds:
        model, normaliser = load_weights(args.runs / f"rae-seed{seed}")
        draws = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            codes = torch.cat([model.encode(train[i : i + 1000]) for i in range(0, len(train), 1000)])
        codes = codes.double()
        sets = {}
        for count in args.fit_codes or [len(codes)]:
            fitted = codes[seeded_subset(len(codes), count, seed=0)]
            of = f" ({len(fitted)} codes)" if args.fit_codes else ""
            for components in args.components:
                weights, means, factors = code_mixture(fitted, components, iteration=0)
                chosen = torch.multinomial(weights.float(), COUNT, replacement=True, generator=draws)
                noise = torch.randn(COUNT, codes.shape[1], generator=draws, dtype=codes.dtype)
                drawn = means[chosen] + (factors[chosen] @ noise[..., None]).squeeze(-1)
                sets[f"mixture of {components}{of}"] = drawn
        sets["training codes"] = codes[torch.randint(0, len(codes), (COUNT,), generator=draws)]
        for name, drawn in sets.items():
            started = time.perf_counter()
            with torch.no_grad():
                parts = [model.decode(drawn[i : i + 1000].float()) for i in range(0, COUNT, 1000)]
            series = normaliser.denormalise(torch.cat(parts))
            fit_seeds = [
                int_seed(seed, "timegan fit", fit) if args.fit_seeds == "timegan" else fit
                for fit in range(args.fits)
            ]
            scores = [discriminative_score_timegan(real, series, fit_seed) for fit_seed in fit_seeds]
            table.setdefault(name, []).append(sum(scores) / len(scores))
            shown = ", ".join(f"{score:.3f}" for score in scores)
            took = time.perf_counter() - started
            print(f"seed {seed} {name}: {table[name][-1]:.3f} (fits {shown}; {took:.0f} s)", flush=True)
    print(f"\nTimeGAN's discriminative score: mean ± std over seeds {args.seeds} of each seed's mean")
    print(f"over its {args.fits} fits")
    for name, values in table.items():
        mean = sum(values) / len(values)
        spread = "n/a"
        if len(values) > 1:
            spread = f"{math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)):.3f}"
        print(f"{name:<30} {mean:.3f} ± {spread}")


if __name__ == "__main__":
    main()

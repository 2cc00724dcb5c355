"""Reproduction: BEGAN at the paper's defaults trains, against the DCGAN at the same budget and seed.

Berthelot, Schumm and Metz, "BEGAN: Boundary Equilibrium Generative Adversarial Networks", 2017:
section 3.5 (the networks, which `--model began` uses by default: `--began-nets began`), section 3.4 and
figure 3 (k_t and the convergence measure M_global), and section 4.2 with figure 2 (lower gamma, less
diverse images). Each run goes through run.py, the product's own path:

- `gan` (the DCGAN) and `began` (gamma 0.5, lambda_k 1e-3, Adam 1e-4 with beta1 0.5) on each dataset and
  seed, at `--steps` iterations;
- `began` at each extra gamma of `--gammas` (the diversity claim), same budget and seeds.

Per run it reads the test metrics the run wrote (fd_classifier, precision, recall) and the training
trace (metrics.csv): the iteration where k_t first leaves 0, its final value and the mean of its last
10% of logged values against the 10% before (settled when they agree within 25%), and M_global's mean
over the first and last 10% of logged values.

    python bench/reproduce_began.py --data digits [--data-dir DATA] [--seeds 0 1 2] [--steps 3000]
        [--began-nets dcgan] [-- RUN.PY OPTIONS]

Options after `--` go to every run.py command, both families alike (e.g. `--image-size 16` for
`--data folder`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

from bench_runs import PlannedRun, check_planned, distinct, names, readable, train_planned

from lightning_genae.datamodules import DATASETS, build_datamodule
from lightning_genae.plugin_loading import load_plugins
from lightning_genae.spread import mean_std

PUBLISHED = "trains stably at gamma 0.5, lambda_k 1e-3; lower gamma gives less diverse images"


def planned(
    args: argparse.Namespace, data: str, model: str, seed: int, extra: list[str], output: Path
) -> PlannedRun:
    """The run.py run (the product's own path) of one arm, dataset and seed."""
    options = [
        "--model", model, "--data", data, "--seed", str(seed), "--max-steps", str(args.steps),
        "--eval-every", str(args.steps), "--output", str(output), *extra,
    ]  # fmt: skip
    if args.data_dir:
        options += ["--data-dir", args.data_dir]
    return PlannedRun(options, output, args.steps)


def trace(run_dir: Path) -> dict[str, float]:
    """k_t and M_global over training, from the run's metrics.csv."""
    with (run_dir / "metrics.csv").open() as file:
        rows = [row for row in csv.DictReader(file) if row.get("train/k")]
    k = [float(row["train/k"]) for row in rows]
    m = [float(row["train/m_global"]) for row in rows]
    steps = [int(row["step"]) for row in rows]
    tenth = max(1, len(rows) // 10)
    left = next((step for step, value in zip(steps, k, strict=True) if value > 0), None)
    last, before = statistics.fmean(k[-tenth:]), statistics.fmean(k[-2 * tenth : -tenth] or [math.nan])
    # Settled: the last tenth of the log agrees with the tenth before; a log too short for two tenths
    # cannot say (NaN, not counted).
    settled = math.nan if math.isnan(before) else float(last > 0 and abs(last - before) <= 0.25 * last)
    return {
        "k_leaves_0": float("nan") if left is None else float(left),
        "k_final": k[-1],
        "k_settled": settled,
        "m_first": statistics.fmean(m[:tenth]),
        "m_last": statistics.fmean(m[-tenth:]),
    }


def test_metrics(run_dir: Path) -> dict[str, float]:
    final = json.loads((run_dir / "summary.json").read_text())["final_metrics"]
    return {name: float(final[f"test/{name}_classifier"]) for name in ("fd", "precision", "recall")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="digits", help="comma list of datasets, e.g. digits,mnist")
    parser.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (for --data mnist)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000, help="training iterations per run")
    parser.add_argument("--gammas", type=float, nargs="*", default=[0.3, 0.7], help="extra gammas for began")
    parser.add_argument("--width", type=int, default=32, help="--width of both families' nets")
    parser.add_argument("--batch-size", type=int, default=16, help="both families' batch (the paper's: 16)")
    parser.add_argument("--output", type=Path, default=Path("runs/reproduce_began"))
    parser.add_argument("--began-nets", choices=["began", "dcgan"], default="began",
                        help="the began arms' nets: the paper's, or the shared DCGAN ones")  # fmt: skip
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, passed = parser.parse_args(argv[:split]), argv[split + 1 :]
    load_plugins()  # a plug-in's datasets are names run.py takes
    datasets = names(parser, args.data, list(DATASETS), "--data")
    distinct(parser, args.seeds, "--seeds")
    # Each gamma names its runs' folders (printed with %g): two that print alike would share one.
    labels = [f"{gamma:g}" for gamma in [0.5, *args.gammas]]
    if len(set(labels)) != len(labels):
        parser.error("--gammas lists a gamma twice, or 0.5 (the paper's, which always runs); give each once")
    if args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")
    width = ["--width", str(args.width), "--batch-size", str(args.batch_size), *passed]
    nets = [] if args.began_nets == "began" else ["--began-nets", args.began_nets]
    suffix = "" if args.began_nets == "began" else f" {args.began_nets} nets"
    arms = [("gan", "gan", []), (f"began gamma 0.5{suffix}", "began", nets)]
    for gamma in args.gammas:
        arms.append((f"began gamma {gamma:g}{suffix}", "began", [*nets, "--began-gamma", str(gamma)]))
    runs = {
        (data, seed, name): planned(
            args,
            data,
            model,
            seed,
            extra + width,
            args.output / f"{data}-{name.replace(' ', '-')}-seed{seed}",
        )
        for data in datasets
        for seed in args.seeds
        for name, model, extra in arms
    }
    check_planned(parser, list(runs.values()))  # every run's folder, before any trains
    for data in datasets:  # and every dataset's files
        readable(parser, build_datamodule(data, **({"data_dir": args.data_dir} if args.data_dir else {})))
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for data in datasets:
        for seed in args.seeds:
            for name, model, _ in arms:
                print(f"{data} seed {seed}: {name}", flush=True)
                run_dir = train_planned(runs[data, seed, name], f"{data} seed {seed} {name}")
                row = test_metrics(run_dir) | (trace(run_dir) if model == "began" else {})
                results.setdefault((data, name), []).append(row)
                print("  " + ", ".join(f"{key} {value:.4g}" for key, value in row.items()), flush=True)
    print(f"\nBEGAN against DCGAN, {args.steps} iterations, seeds {args.seeds}; published: {PUBLISHED}")
    columns = ["fd", "precision", "recall", "k_leaves_0", "k_final", "m_first", "m_last"]
    print("| data | arm | n | " + " | ".join(columns) + " | k settled |")
    print("|---|---|---:|" + "---:|" * (len(columns) + 1))
    for (data, name), rows in results.items():
        cells = [mean_std([row[c] for row in rows], ".3g") if c in rows[0] else "–" for c in columns]
        settled = "–"
        if "k_settled" in rows[0]:
            judged = [row["k_settled"] for row in rows if not math.isnan(row["k_settled"])]
            settled = f"{sum(judged):.0f}/{len(judged)}" if judged else "n/a (log too short)"
        print(f"| {data} | {name} | {len(rows)} | " + " | ".join(cells) + f" | {settled} |")


if __name__ == "__main__":
    main()

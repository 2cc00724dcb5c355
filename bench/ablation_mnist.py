"""Benchmark: the augmentation ablation on real MNIST limited to 1,000 training images.

The DCGAN with `none`, `ae`, `vae`, `ae-d`, `diffaug` and `ada`, three seeds each, at a fixed step budget,
through the same grid runner users call (`run.py --augment a,b,... --seeds ...`). Every arm that has a
strength to set is first tuned on the validation split with the same budget, three candidates on a tune
seed that is not among the reported seeds: `--augment-p` for ae, vae and ae-d, DiffAugment's translation
ratio (the operation that is costly on centred digits; 0 leaves color and cutout), ADA's target
r_t. Writes ROOT/ablation.csv, .md and .png, ROOT/tuning.json, plus ROOT/bench.json (budget, wall time,
machine), and prints the Markdown table as measured.

    python bench/ablation_mnist.py --data-dir DATA    # CPU budget, about 100 min on 2 cores
    python bench/ablation_mnist.py --steps 10000 --width 64 --accelerator gpu   # a larger budget on a GPU
    # the AE augmentations with the adaptive strength, its target tuned with the same budget:
    python bench/ablation_mnist.py --augments ae,vae,ae-d --augment-p auto \
        --output runs/bench-ablation-mnist-1k-auto
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from lightning_genae.cli import main as run_main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=os.environ.get("GENAE_DATA_DIR", "data"))
    parser.add_argument("--output", default="runs/bench-ablation-mnist-1k", help="the grid's ROOT folder")
    parser.add_argument("--augments", default="none,ae,vae,ae-d,diffaug,ada")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tune-seeds", default="100", help="seeds of the tuning runs; empty: no tuning")
    parser.add_argument("--augment-p", default="0.1,0.25,0.5", help="candidates for ae, vae and ae-d")
    parser.add_argument("--diffaug-translation", default="0,0.0625,0.125", help="candidates for diffaug")
    parser.add_argument("--ada-target", default="0.4,0.6,0.8", help="candidates for ada")
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1500, help="training iterations per run")
    parser.add_argument("--width", type=int, default=32, help="channel width of GAN and augmenter")
    parser.add_argument("--augmenter-steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-samples", type=int, default=5000)
    parser.add_argument("--accelerator", default="auto")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    root = Path(args.output)
    command = [
        "--model", "gan",
        "--data", "mnist",
        "--data-dir", args.data_dir,
        "--train-size", str(args.train_size),
        "--augment", args.augments,
        "--seeds", args.seeds,
        "--max-steps", str(args.steps),
        "--width", str(args.width),
        "--augmenter-width", str(args.width),
        "--augmenter-steps", str(args.augmenter_steps),
        "--eval-every", str(args.eval_every),
        "--image-every", str(args.eval_every),
        "--ckpt-every", str(args.steps),
        "--eval-samples", str(args.eval_samples),
        "--accelerator", args.accelerator,
        "--output", str(root),
    ]  # fmt: skip
    if args.tune_seeds:
        arms = set(args.augments.split(","))
        ae_arms = {"ae", "vae", "ae-d"}
        candidates = {
            "--augment-p": (args.augment_p, ae_arms),
            "--diffaug-translation": (args.diffaug_translation, {"diffaug"}),
            # the target is read by ADA and by every AE augmentation whose strength is "auto"
            "--ada-target": (
                args.ada_target,
                {"ada"} | (ae_arms if "auto" in args.augment_p.split(",") else set()),
            ),
        }
        command += ["--tune-seeds", args.tune_seeds]
        for option, (values, readers) in candidates.items():
            if values and arms & readers:
                command += [option, values]
    machine = {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print("python run.py " + " ".join(command), flush=True)
    started = time.time()
    code = run_main(command)
    wall = time.time() - started
    info = {"command": "python run.py " + " ".join(command), "exit_code": code, "wall_time_s": round(wall, 1)}
    info["machine"] = machine
    root.mkdir(parents=True, exist_ok=True)
    (root / "bench.json").write_text(json.dumps(info, indent=2) + "\n")
    report = root / "ablation.md"
    if report.is_file():
        print(report.read_text())
    print(f"grid wall time {wall / 60:.1f} min on {machine}; exit code {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())

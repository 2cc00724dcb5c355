"""Benchmark: what generative evaluation costs, on whatever machine runs it.

1. Feature extraction and all metrics for N vs N real MNIST images (test split vs training images).
2. The share of training time that evaluation at the default cadence takes: one validation evaluation
   of the DCGAN (generate, extract, compare) against `--eval-every` training iterations.

    python bench/eval.py --data-dir DATA
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer

from lightning_genae.datamodules import build_datamodule, to_uint8
from lightning_genae.experiment.config import RunConfig
from lightning_genae.metrics.backbones import BackboneUnavailable, load_backbone
from lightning_genae.metrics.distances import feature_metrics
from lightning_genae.metrics.generative import RealFeatures, extract_features, seeded_subset
from lightning_genae.models import GANModule


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=os.environ.get("GENAE_DATA_DIR", "data"))
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--train-steps", type=int, default=100, help="iterations timed to get the step time")
    parser.add_argument("--inception-weights", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}"
    )

    datamodule = build_datamodule("mnist", data_dir=args.data_dir, batch_size=64)
    datamodule.prepare_data()
    datamodule.setup()
    real_images, _ = datamodule.split_tensors("test")
    train_images, _ = datamodule.split_tensors("train")
    n = min(args.samples, len(real_images))
    other_images = train_images[seeded_subset(len(train_images), n, 0)]
    real_images = real_images[:n]

    for name in ("classifier", "inception"):
        try:
            backbone = load_backbone(name, "mnist", datamodule, inception_weights=args.inception_weights)
        except BackboneUnavailable as error:
            print(f"{name}: skipped ({error})")
            continue
        times: dict[str, float] = {}
        start = time.perf_counter()
        real = extract_features(backbone, real_images, device)
        times["features of the real set"] = time.perf_counter() - start
        start = time.perf_counter()
        other = extract_features(backbone, other_images, device)
        times["features of the compared set"] = time.perf_counter() - start
        start = time.perf_counter()
        values = feature_metrics(real, other)
        times["all metrics (FD, KID, P/R, D/C)"] = time.perf_counter() - start
        print(
            f"\n{name}: {n} vs {n} MNIST images ({backbone.description}, {backbone.feature_dim}-d features)"
        )
        for label, seconds in times.items():
            print(f"  {label:<34} {seconds:8.2f} s")
        print(f"  {'total':<34} {sum(times.values()):8.2f} s")
        print(
            "  values (test split vs training images): "
            + ", ".join(f"{key} {value:.4g}" for key, value in values.items())
        )

    # Share of training time at the default cadence.
    defaults = RunConfig()
    backbone = load_backbone(defaults.backbone, "mnist", datamodule)
    model = GANModule(datamodule.image_shape)
    timer = Timer()
    trainer = pl.Trainer(
        max_steps=2 * args.train_steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        accelerator="auto",
        devices=1,
    )
    trainer.fit(model, datamodule=datamodule)
    step_time = timer.time_elapsed("train") / args.train_steps
    val_n = min(defaults.eval_samples, len(datamodule.split_tensors("val")[0]))
    real_val = RealFeatures(backbone).get(datamodule, "val", device)[:val_n]  # cached after the first run
    model.eval().to(device)
    start = time.perf_counter()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        samples = torch.cat(
            [to_uint8(model.sample(500, generator=generator)).cpu() for _ in range(0, val_n, 500)]
        )
        feature_metrics(real_val, extract_features(backbone, samples[:val_n], device))
    eval_time = time.perf_counter() - start
    training_time = defaults.eval_every * step_time
    print(
        f"\ncadence: DCGAN on MNIST, batch 64: {step_time * 1000:.1f} ms per iteration; one evaluation "
        f"({val_n} generated vs {val_n} validation images) {eval_time:.2f} s = "
        f"{100 * eval_time / (training_time + eval_time):.1f}% of training time at --eval-every "
        f"{defaults.eval_every}"
    )


if __name__ == "__main__":
    main()

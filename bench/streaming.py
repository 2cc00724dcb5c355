"""Benchmark: what streaming a prepared dataset saves in memory and costs in speed, on MNIST.

Memory. MNIST's IDX files are copied with the training images repeated `--copies` times (20: 1.2 M images,
0.94 GB of uint8; the fixed 5,000 validation images and the official 10,000 test images stay as they are),
both datasets are prepared once with `genae prepare`, and the same GAN run (`run.py --model gan --data mnist
--backbone none`, `--memory-steps` iterations, one evaluation at the end) is started in a fresh process on
each of the four folders. Each process's peak resident memory comes from the kernel's accounting of that child
(`os.wait4`). In memory, the run grows by the dataset's size; streamed, it should not: the table prints each
path's growth from MNIST to the replicated MNIST (target: within 100 MB streamed).

Speed. The DCGAN run (family defaults, batch 64, one CPU thread, no loader workers) trains on MNIST in memory
and streamed, the two alternating run after run in this one process, `--rounds` runs each of `--speed-steps`
iterations; a run's figure is its iterations per second after `--warmup` iterations, by wall clock and by
this process's CPU time (the stream's reading is done in this process, so both count it). The ratio of the
medians (streamed over in memory; target: at least 0.9) is printed.

    python bench/streaming.py --data-dir DATA [--copies 20] [--work runs/bench_streaming]
        [--memory-steps 100] [--speed-steps 300] [--warmup 50] [--rounds 3] [--parts memory speed]

`--data-dir` holds MNIST as run.py reads it (DATA/MNIST/raw/*-ubyte[.gz]); the work folder keeps the
copies and the prepared folders for later invocations (their manifests say they are complete).
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from overhead import added_callback

from lightning_genae.datamodules import PREPARED_MANIFEST
from lightning_genae.datamodules.mnist import IDX_FILES, find_idx_file

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def copy_mnist(source: Path, target: Path, copies: int) -> None:
    """MNIST's four IDX files under target/MNIST/raw, the training images and labels repeated `copies` times
    (the IDX header's first dimension multiplied accordingly)."""
    raw = target / "MNIST" / "raw"
    if all((raw / name).is_file() for pair in IDX_FILES.values() for name in pair):
        return
    raw.mkdir(parents=True, exist_ok=True)
    for split, pair in IDX_FILES.items():
        for name in pair:
            found = find_idx_file(source / "MNIST" / "raw", name)
            if found is None:
                raise SystemExit(f"--data-dir: {source / 'MNIST' / 'raw'} holds no {name}[.gz]")
            data = (gzip.open if found.suffix == ".gz" else open)(found, "rb").read()
            repeat = copies if split == "train" else 1
            dims = 1 + (int.from_bytes(data[:4], "big") & 0xFF)
            header = bytearray(data[: 4 * dims])
            header[4:8] = (int.from_bytes(header[4:8], "big") * repeat).to_bytes(4, "big")
            partial = raw / f"{name}.partial"
            with open(partial, "wb") as file:
                file.write(header)
                for _ in range(repeat):
                    file.write(data[4 * dims :])
            os.replace(partial, raw / name)


def prepared(data_dir: Path, output: Path) -> Path:
    """`output`, prepared from `data_dir` by `genae prepare` unless its manifest is already there."""
    if not (output / PREPARED_MANIFEST).is_file():
        shutil.rmtree(output, ignore_errors=True)
        command = [sys.executable, "-m", "lightning_genae", "prepare", "--data", "mnist"]
        subprocess.run([*command, "--data-dir", str(data_dir), "--output", str(output)], env=ENV, check=True)
    return output


def peak_rss_mib(data_dir: Path, steps: int, output: Path) -> float:
    """The peak RSS of one GAN run.py process on `data_dir`, in MiB (ru_maxrss is in KiB on Linux)."""
    command = [sys.executable, str(REPO / "run.py"), "--model", "gan", "--data", "mnist"]
    command += ["--data-dir", str(data_dir), "--max-steps", str(steps), "--eval-every", str(steps)]
    command += ["--backbone", "none", "--threads", "1", "--output", str(output), "--overwrite"]
    child = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{child.stderr.read().decode()[-3000:]}")
    return usage.ru_maxrss / 1024


class Rate:
    """A Lightning callback timing the iterations after `warmup`, by wall clock and process CPU time."""

    def __init__(self, warmup: int) -> None:
        from pytorch_lightning.callbacks import Callback

        self.warmup = warmup
        self.started: tuple[float, float] | None = None
        self.ended: tuple[float, float] | None = None
        self.iterations = 0
        outer = self

        class _Hook(Callback):
            def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
                if pl_module.iteration == outer.warmup:
                    outer.started = (time.perf_counter(), time.process_time())
                elif pl_module.iteration > outer.warmup:
                    outer.ended = (time.perf_counter(), time.process_time())
                    outer.iterations = pl_module.iteration - outer.warmup

        self.callback = _Hook()

    def per_second(self) -> tuple[float, float]:
        """Iterations per second by wall clock and by CPU time."""
        assert self.started is not None and self.ended is not None, "the run ended before its warm-up"
        wall, cpu = (self.ended[i] - self.started[i] for i in range(2))
        return self.iterations / wall, self.iterations / cpu


def rate(data_dir: Path, steps: int, warmup: int, output: Path) -> tuple[float, float]:
    """One DCGAN run of `steps` iterations on `data_dir` in this process: its iterations per second."""
    from lightning_genae.experiment.cli import main

    timer = Rate(warmup)
    argv = ["--model", "gan", "--data", "mnist", "--data-dir", str(data_dir), "--max-steps", str(steps)]
    argv += ["--eval-every", str(10**9), "--image-every", str(10**9), "--ckpt-every", str(10**9)]
    argv += ["--no-test-split", "--backbone", "none", "--threads", "1", "--output", str(output)]
    with added_callback(timer.callback):
        code = main([*argv, "--overwrite"])
    if code != 0:
        raise SystemExit(f"run.py {' '.join(argv)} failed with exit code {code}")
    return timer.per_second()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="a folder holding MNIST/raw")
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_streaming"))
    parser.add_argument("--memory-steps", type=int, default=100)
    parser.add_argument("--speed-steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", nargs="+", choices=("memory", "speed"), default=["memory", "speed"])
    args = parser.parse_args()
    if args.speed_steps <= args.warmup:
        parser.error("--speed-steps must be above --warmup")
    torch.set_num_threads(1)
    work = args.work.resolve()
    sources = {"MNIST": work / "mnist", f"MNIST x{args.copies}": work / f"mnist_x{args.copies}"}
    for name, folder in sources.items():
        copy_mnist(args.data_dir.resolve(), folder, 1 if name == "MNIST" else args.copies)
    print("preparing both datasets (once; kept in --work)", flush=True)
    streams = {name: prepared(folder, Path(f"{folder}_prepared")) for name, folder in sources.items()}

    peaks: dict[tuple[str, str], float] = {}
    rates: dict[str, list[tuple[float, float]]] = {"in memory": [], "streamed": []}
    with tempfile.TemporaryDirectory() as scratch:
        for name in sources if "memory" in args.parts else ():
            for path, data_dir in (("in memory", sources[name]), ("streamed", streams[name])):
                print(f"memory: {name} {path}, {args.memory_steps} iterations", flush=True)
                peaks[name, path] = peak_rss_mib(data_dir, args.memory_steps, Path(scratch) / "run")
        for round_ in range(args.rounds if "speed" in args.parts else 0):
            for path, data_dir in (("in memory", sources["MNIST"]), ("streamed", streams["MNIST"])):
                print(f"speed: round {round_ + 1}/{args.rounds}, MNIST {path}", flush=True)
                rates[path].append(rate(data_dir, args.speed_steps, args.warmup, Path(scratch) / "speed"))

    small, large = sources
    if peaks:
        print_memory(peaks, small, large, args.memory_steps)
    if rates["in memory"]:
        print_speed(rates, args.rounds, args.warmup)


def print_memory(peaks: dict[tuple[str, str], float], small: str, large: str, steps: int) -> None:
    print(f"\npeak RSS of a GAN run ({steps} iterations, --backbone none, one thread), MiB")
    print(f"{'path':<12} {small:>12} {large:>14} {'growth':>10}")
    for path in ("in memory", "streamed"):
        growth = peaks[large, path] - peaks[small, path]
        print(f"{path:<12} {peaks[small, path]:>12.0f} {peaks[large, path]:>14.0f} {growth:>+10.0f}")


def print_speed(rates: dict[str, list[tuple[float, float]]], rounds: int, warmup: int) -> None:
    print(f"\nDCGAN on MNIST, {rounds} runs each, alternating, iterations/s after {warmup}")
    medians = {}
    for path, values in rates.items():
        walls, cpus = zip(*values, strict=True)
        medians[path] = (statistics.median(walls), statistics.median(cpus))
        shown = ", ".join(f"{wall:.2f}" for wall in walls)
        print(f"{path:<12} wall {medians[path][0]:.2f} ({shown}); CPU time {medians[path][1]:.2f}")
    wall_ratio = medians["streamed"][0] / medians["in memory"][0]
    cpu_ratio = medians["streamed"][1] / medians["in memory"][1]
    print(f"streamed / in memory: {wall_ratio:.3f} by wall clock, {cpu_ratio:.3f} by CPU time")


if __name__ == "__main__":
    main()

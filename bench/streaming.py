"""Benchmark: what streaming a prepared dataset saves in memory and costs in speed, on MNIST.

Memory. MNIST's IDX files are copied with the training images repeated `--copies` times (20: 1.2 M images,
0.94 GB of uint8; the fixed 5,000 validation images and the official 10,000 test images stay as they are),
both datasets are prepared once with `genae prepare`, and the same GAN run (`run.py --model gan --data mnist
--backbone none`, `--memory-steps` iterations, one evaluation at the end, and `--memory-options`, such as
`--augment ae`) is started in a fresh process on each of the four folders. Each run reports its own peak
resident memory (VmHWM) as it exits: Linux starts a child's `wait4` figure from this process's peak. In
memory, the run grows by the dataset's size; streamed, it should not: the table prints each path's growth
from MNIST to the replicated MNIST (target: within 100 MB streamed).

Speed. The DCGAN run (family defaults, batch 64, one CPU thread, no loader workers) trains on MNIST in memory
and streamed, the two alternating run after run in this one process, `--rounds` runs each of `--speed-steps`
iterations; a run's figure is its iterations per second after `--warmup` iterations, by wall clock and by
this process's CPU time (the stream's reading is done in this process, so both count it). The ratio of the
medians (streamed over in memory; target: at least 0.9) is printed.

Classifier (`--parts classifier`). One epoch of the feature classifier `fd_classifier` is computed with,
trained as a run trains it on first use, on MNIST in memory and streamed (read by index a batch at a time),
the two alternating, `--rounds` times each, one thread: the seconds each, the data's reading included, and
whether the two give the same weights.

Engines (`--parts engines`, not run by default: it needs MosaicML Streaming, `pip install mosaicml-streaming`,
import name `streaming`). MNIST's 60,000 training images are written once in LitData's chunked format (the
record and chunk size `genae prepare` writes) and once in MosaicML's MDS format (the same record: the image
as uint8 [1, 28, 28], the label as int; no compression, the same shard size); each engine's own loader then
reads one shuffled epoch (seed 0, batch 64, full batches only, no workers, default collation, one thread) in
a fresh process, the engines alternating, `--rounds` times each. Printed: the write time and size on disk,
the medians of items/s by wall clock and by that process's CPU time and of its peak RSS (the whole process:
Python, torch and the engine; its own VmHWM, since Linux starts a child's `wait4` figure from this process's
peak, which holds the images), and whether a loader's state taken `RESUME_AFTER` batches into the
epoch and loaded into a new loader gives the rest of the uninterrupted epoch, image for image.

    python bench/streaming.py --data-dir DATA [--copies 20] [--work runs/bench_streaming]
        [--memory-steps 100] [--memory-options '--augment ae'] [--speed-steps 300] [--warmup 50]
        [--rounds 3] [--parts memory speed classifier engines]

`--data-dir` holds MNIST as run.py reads it (DATA/MNIST/raw/*-ubyte[.gz]); the work folder keeps the
copies and the prepared folders for later invocations (their manifests say they are complete).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.writer import BinaryWriter
from overhead import added_callback

from lightning_genae.datamodules import PREPARED_MANIFEST, build_datamodule
from lightning_genae.datamodules.mnist import (
    IDX_FILES,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    find_idx_file,
    read_idx,
)
from lightning_genae.datamodules.streaming import CHUNK_BYTES
from lightning_genae.metrics.classifier import train_classifier

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
PYTHONPATH = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": PYTHONPATH}
ENGINES = ("litdata", "mosaicml")
BATCH = 64
RESUME_AFTER = 300  # batches, of the epoch's 937


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


def child_run(command: list[str]) -> tuple[str, float]:
    """`command` run in a fresh process: its standard output and its peak RSS in MiB (ru_maxrss is in KiB on
    Linux). Its output goes through files, which a pipe's buffer cannot block before `wait4` returns."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, env=ENV, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{err.read().decode()[-3000:]}")
        out.seek(0)
        return out.read().decode(), usage.ru_maxrss / 1024


# run.py, printing its process's peak RSS (VmHWM, kB) as the last line of its output when it exits.
PEAK_REPORTING_RUN = (
    "import atexit, re, runpy, sys; atexit.register(lambda: print(re.search(r'VmHWM:\\s*(\\d+)', "
    "open('/proc/self/status').read())[1])); sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def peak_rss_mib(data_dir: Path, steps: int, output: Path, options: list[str]) -> float:
    """The peak RSS of one GAN run.py process on `data_dir` with `options`, in MiB."""
    command = [
        sys.executable,
        "-c",
        PEAK_REPORTING_RUN,
        str(REPO / "run.py"),
        "--model",
        "gan",
        "--data",
        "mnist",
    ]
    command += ["--data-dir", str(data_dir), "--max-steps", str(steps), "--eval-every", str(steps)]
    command += ["--backbone", "none", "--threads", "1", "--output", str(output), "--overwrite", *options]
    return int(child_run(command)[0].split()[-1]) / 1024


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


def classifier_epoch(data_dir: Path) -> tuple[float, dict[str, torch.Tensor]]:
    """One epoch of the feature classifier on MNIST read from `data_dir`: its seconds and its weights."""
    start = time.perf_counter()
    model, _ = train_classifier(build_datamodule("mnist", data_dir=str(data_dir)), epochs=1)
    return time.perf_counter() - start, model.state_dict()


def compare_classifiers(folders: dict[str, Path], rounds: int) -> None:
    """`classifier_epoch` from each of `folders`, alternating, `rounds` times: prints seconds and sameness."""
    seconds: dict[str, list[float]] = {path: [] for path in folders}
    weights = []
    for round_ in range(rounds):
        for path, data_dir in folders.items():
            print(f"classifier: round {round_ + 1}/{rounds}, MNIST {path}", flush=True)
            took, state = classifier_epoch(data_dir)
            seconds[path].append(took)
            weights.append(state)
    print("\none epoch of the feature classifier on MNIST, one thread, s: median (each)")
    for path, values in seconds.items():
        print(f"{path:<12} {statistics.median(values):.1f} ({', '.join(f'{v:.1f}' for v in values)})")
    same = all(torch.equal(state[key], weights[0][key]) for state in weights for key in state)
    print(f"the same weights in memory and streamed, every round: {'yes' if same else 'no'}")


def import_mosaic() -> Any:
    """MosaicML Streaming's package, `streaming`, which this file's own name hides while its folder is on
    the import path."""
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE.parent]
    import streaming

    return streaming


def write_engine(engine: str, folder: Path, images: Any, labels: list[int]) -> float:
    """The images (uint8 [N, H, W]) and labels written under `folder` in `engine`'s format, one record per
    image (uint8 [1, H, W] and an int); the seconds it took."""
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    if engine == "litdata":
        writer = BinaryWriter(str(folder), chunk_bytes=CHUNK_BYTES)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            writer[index] = {"image": torch.from_numpy(image[None]), "label": label}
        writer.done()
        writer.merge()
    else:
        columns = {"image": "ndarray:uint8:1," + ",".join(map(str, images.shape[1:])), "label": "int"}
        with import_mosaic().MDSWriter(out=str(folder), columns=columns, size_limit=CHUNK_BYTES) as mds:
            for image, label in zip(images, labels, strict=True):
                mds.write({"image": image[None], "label": label})
    return time.perf_counter() - started


def engine_loader(engine: str, folder: Path) -> Any:
    """`engine`'s own loader over `folder`: shuffled with seed 0, batches of 64, full batches only, no
    workers; LitData's dataset decodes items one at a time, as training's does."""
    if engine == "litdata":
        dataset = StreamingDataset(str(folder), shuffle=True, drop_last=True, seed=0, batch_decode=False)
        return StreamingDataLoader(dataset, batch_size=BATCH, num_workers=0)
    mosaic = import_mosaic()
    dataset = mosaic.StreamingDataset(local=str(folder), shuffle=True, shuffle_seed=0, batch_size=BATCH)
    return mosaic.StreamingDataLoader(dataset, batch_size=BATCH, num_workers=0, drop_last=True)


def read_epoch(engine: str, folder: Path) -> None:
    """One epoch through `engine`'s loader in this process: prints its items, wall and CPU seconds, and the
    process's peak RSS in MiB (VmHWM, in kB)."""
    loader = engine_loader(engine, folder)
    wall, cpu = time.perf_counter(), time.process_time()
    items = sum(len(batch["label"]) for batch in loader)
    peak = re.search(r"VmHWM:\s*(\d+)", Path("/proc/self/status").read_text())[1]
    print(items, time.perf_counter() - wall, time.process_time() - cpu, int(peak) / 1024)


def items(loader: Any, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels of the loader's first `stop` batches (all by default), concatenated."""
    got = list(itertools.islice(loader, stop))
    return torch.cat([batch["image"] for batch in got]), torch.cat([batch["label"] for batch in got])


def resumes(engine: str, folder: Path) -> bool:
    """Whether `engine`'s loader state, taken `RESUME_AFTER` batches into an epoch and loaded into a new
    loader, gives the rest of the uninterrupted epoch, image for image and label for label."""
    images, labels = items(engine_loader(engine, folder))
    first = engine_loader(engine, folder)
    items(first, RESUME_AFTER)
    state = first.state_dict()
    resumed = engine_loader(engine, folder)
    resumed.load_state_dict(state)
    rest, rest_labels = items(resumed)
    skip = RESUME_AFTER * BATCH
    return torch.equal(rest, images[skip:]) and torch.equal(rest_labels, labels[skip:])


def compare_engines(data_dir: Path, work: Path, rounds: int) -> None:
    """The engines part: each engine's write, `rounds` alternating epochs each, and the resume check."""
    copy_mnist(data_dir, work / "mnist", 1)
    raw = work / "mnist" / "MNIST" / "raw"
    images_file, labels_file = (find_idx_file(raw, name) for name in IDX_FILES["train"])
    images, labels = read_idx(images_file, IDX_IMAGES_MAGIC), read_idx(labels_file, IDX_LABELS_MAGIC).tolist()
    folders = {engine: work / "engines" / engine for engine in ENGINES}
    written = {}
    for engine, folder in folders.items():
        print(f"engines: writing {len(images):,} images for {engine}", flush=True)
        seconds = write_engine(engine, folder, images, labels)
        written[engine] = seconds, sum(file.stat().st_size for file in folder.rglob("*") if file.is_file())
    reads: dict[str, list[tuple[float, float, float]]] = {engine: [] for engine in ENGINES}
    for round_, (engine, folder) in itertools.product(range(rounds), folders.items()):
        print(f"engines: round {round_ + 1}/{rounds}, one epoch through {engine}", flush=True)
        out, _ = child_run(
            [sys.executable, str(HERE), "--data-dir", str(data_dir), "--read-epoch", engine, str(folder)]
        )
        count, wall, cpu, peak = map(float, out.split()[-4:])
        reads[engine].append((count / wall, count / cpu, peak))
    print(f"engines: resuming each loader after {RESUME_AFTER} batches", flush=True)
    resumed = {engine: resumes(engine, folder) for engine, folder in folders.items()}
    print(
        f"\nMNIST train ({len(images):,} images), one shuffled epoch, batch {BATCH}, no workers, one thread;"
    )
    print(f"{rounds} fresh processes each, alternating; medians, each run's items/s (wall) in brackets")
    print("engine    write s  disk MiB  items/s wall  items/s CPU  peak RSS MiB  resumes  runs")
    for engine in ENGINES:
        walls, cpus, peaks = (statistics.median(values) for values in zip(*reads[engine], strict=True))
        runs = ", ".join(f"{wall:,.0f}" for wall, _, _ in reads[engine])
        seconds, size = written[engine]
        row = (
            f"{engine:<9} {seconds:>7.1f} {size / 2**20:>9.1f} {walls:>13,.0f} {cpus:>12,.0f} {peaks:>13,.0f}"
        )
        print(f"{row}  {'yes' if resumed[engine] else 'no':<7}  ({runs})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="a folder holding MNIST/raw")
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_streaming"))
    parser.add_argument("--memory-steps", type=int, default=100)
    parser.add_argument("--speed-steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parts = ("memory", "speed", "classifier", "engines")
    parser.add_argument("--memory-options", default="", help="more run.py options for the memory runs")
    parser.add_argument("--parts", nargs="+", choices=parts, default=["memory", "speed"])
    parser.add_argument("--read-epoch", nargs=2, metavar=("ENGINE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_steps <= args.warmup:
        parser.error("--speed-steps must be above --warmup")
    torch.set_num_threads(1)
    if args.read_epoch:
        return read_epoch(args.read_epoch[0], Path(args.read_epoch[1]))
    if "engines" in args.parts:
        try:
            import_mosaic()
        except ImportError:
            parser.exit(2, "--parts engines needs MosaicML Streaming: pip install mosaicml-streaming\n")
    work = args.work.resolve()
    sources = {"MNIST": work / "mnist", f"MNIST x{args.copies}": work / f"mnist_x{args.copies}"}
    streams = {}
    if {"memory", "speed", "classifier"} & set(args.parts):
        # The replicated copy serves the memory part alone.
        needed = sources if "memory" in args.parts else {"MNIST": sources["MNIST"]}
        for name, folder in needed.items():
            copy_mnist(args.data_dir.resolve(), folder, 1 if name == "MNIST" else args.copies)
        print(f"preparing {', '.join(needed)} (once; kept in --work)", flush=True)
        streams = {name: prepared(folder, Path(f"{folder}_prepared")) for name, folder in needed.items()}

    peaks: dict[tuple[str, str], float] = {}
    rates: dict[str, list[tuple[float, float]]] = {"in memory": [], "streamed": []}
    with tempfile.TemporaryDirectory() as scratch:
        for name in sources if "memory" in args.parts else ():
            for path, data_dir in (("in memory", sources[name]), ("streamed", streams[name])):
                print(f"memory: {name} {path}, {args.memory_steps} iterations", flush=True)
                run = Path(scratch) / "run"
                peaks[name, path] = peak_rss_mib(
                    data_dir, args.memory_steps, run, args.memory_options.split()
                )
        for round_ in range(args.rounds if "speed" in args.parts else 0):
            for path, data_dir in (("in memory", sources["MNIST"]), ("streamed", streams["MNIST"])):
                print(f"speed: round {round_ + 1}/{args.rounds}, MNIST {path}", flush=True)
                rates[path].append(rate(data_dir, args.speed_steps, args.warmup, Path(scratch) / "speed"))

    if "classifier" in args.parts:
        compare_classifiers({"in memory": sources["MNIST"], "streamed": streams["MNIST"]}, args.rounds)
    if "engines" in args.parts:
        compare_engines(args.data_dir.resolve(), work, args.rounds)
    small, large = sources
    if peaks:
        print_memory(peaks, small, large, args.memory_steps, args.memory_options)
    if rates["in memory"]:
        print_speed(rates, args.rounds, args.warmup)


def print_memory(
    peaks: dict[tuple[str, str], float], small: str, large: str, steps: int, options: str
) -> None:
    print(f"\npeak RSS of a GAN run ({steps} iterations, --backbone none {options}, one thread), MiB")
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

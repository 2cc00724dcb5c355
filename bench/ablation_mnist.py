"""Benchmark: the augmentation ablation on real MNIST limited to 1,000 training images.

The DCGAN with `none`, `ae`, `vae`, `ae-d`, `diffaug` and `ada`, three seeds each, at a fixed step budget,
through the same grid runner users call (`run.py --augment a,b,... --seeds ...`). Every arm that has a
strength to set is first tuned on the validation split with the same budget, three candidates on a tune
seed that is not among the reported seeds: `--augment-p` for ae, vae and ae-d, DiffAugment's translation
ratio (the operation that is costly on centred digits; 0 leaves color and cutout), ADA's target
r_t. Writes ROOT/ablation.csv, .md and .png, ROOT/tuning.json, plus ROOT/bench.json (budget, wall time,
machine), and prints the Markdown table as measured.

`--jobs N` trains N cells at once, each in its own `run.py --grid-index K` process (one GPU holds many
runs of these small nets): the tuning cells first, then the final cells seed by seed (every arm's seed 0,
then every arm's seed 1, ...), so that `--start-cells-for MINUTES` (no cell starts after it) leaves whole
seeds; then `run.py --summarize ROOT`. Each cell's output is appended to ROOT.cell-logs/cell-K.log. The
exit code is 0 only when every final cell finished; the same command run again runs, resumes or retries
the others.
Ctrl-C or SIGTERM is passed on to the running cells, which stop after their iteration in progress with
their checkpoints saved, and the bench exits with 128 + the signal's number once they have.

    python bench/ablation_mnist.py --data-dir DATA    # CPU budget, about 100 min on 2 cores
    python bench/ablation_mnist.py --steps 10000 --width 64 --accelerator gpu   # a larger budget on a GPU
    python bench/ablation_mnist.py --seeds 0,1,2,3,4,5,6,7,8,9 --accelerator gpu --jobs 10   # more seeds
    # the AE augmentations with the adaptive strength, its target tuned with the same budget:
    python bench/ablation_mnist.py --augments ae,vae,ae-d --augment-p auto \
        --output runs/bench-ablation-mnist-1k-auto
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from lightning_genae.augmentation import needs_augmenter, parse_augment
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.ablation.runs import load_runs
from lightning_genae.experiment.cli import main as run_main


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
    parser.add_argument("--jobs", type=int, default=1, help="cells trained at once, each in its own process")
    parser.add_argument(
        "--start-cells-for", type=float, default=None, metavar="MINUTES",
        help="with --jobs: no cell starts after this many minutes (the summary lists the others as missing)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be 1 or more, got {args.jobs}")
    if args.start_cells_for is not None and args.jobs == 1:
        parser.error("--start-cells-for needs --jobs 2 or more (one process trains the grid's cells in turn)")
    minutes = args.start_cells_for
    if minutes is not None and not (math.isfinite(minutes) and minutes > 0):
        parser.error(f"--start-cells-for must be a positive number of minutes, got {minutes}")
    return args


def trains_an_augmenter(arm: str) -> bool:
    """Whether the arm (`ae`, `ae+diffaug`) trains an augmenter, so reads --augmenter-width and -steps (an
    unknown name is left to run.py, which names it)."""
    try:
        return needs_augmenter(parse_augment(arm))
    except ConfigError:
        return False


RUN_PY = str(Path(__file__).resolve().parent.parent / "run.py")
CELL_LINE = re.compile(r"^# cell (\d+): (\S+)", re.MULTILINE)


def grid_cells(command: list[str]) -> tuple[list[int], list[int]]:
    """The grid's tuning cells and its final cells, by index (as `--print-config` lists them), the final
    ones ordered seed by seed."""
    listed = subprocess.run(
        [sys.executable, RUN_PY, *command, "--print-config"], capture_output=True, text=True
    )
    if listed.returncode != 0:
        sys.stderr.write(listed.stderr)  # run.py's one line: the grid it was given is refused
        raise SystemExit(listed.returncode)
    tuning, final = [], []
    for index, folder in CELL_LINE.findall(listed.stdout):
        (tuning if folder.startswith("tuning/") else final).append((folder, int(index)))

    def seed_of(cell: tuple[str, int]) -> tuple[int, int]:
        return int(re.search(r"seed(\d+)$", cell[0]).group(1)), cell[1]

    return [index for _, index in tuning], [index for _, index in sorted(final, key=seed_of)]


class Stopped(Exception):
    """Ctrl-C or SIGTERM reached the bench."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# The signals received while the cells run. The handler only notes them; the loop acts on them between its
# steps, so that no signal falls between a cell's start and its record, where that cell would go unstopped.
RECEIVED: list[int] = []


def _note_signal(signum: int, frame: object) -> None:
    RECEIVED.append(signum)


def run_cells_at_once(
    command: list[str], cells: list[int], jobs: int, logs: Path, deadline: float
) -> tuple[int, int]:
    """Trains `cells`, `jobs` processes at a time, none started after `deadline` (time.time()); returns how
    many failed and how many were not started. A line per cell says when it ends and how many are left.
    At a signal noted in RECEIVED, it is passed on to the running cells, which are waited for, and `Stopped`
    is raised."""
    environment = dict(os.environ)
    environment.setdefault("OMP_NUM_THREADS", "1")  # the processes share the machine's cores
    waiting, running, failed, started = list(cells), {}, 0, time.time()
    while waiting or running:
        while waiting and len(running) < jobs and time.time() < deadline and not RECEIVED:
            index = waiting.pop(0)
            log = open(logs / f"cell-{index}.log", "a")  # noqa: SIM115 (closed when the cell ends)
            log.write(f"--- {datetime.now():%Y-%m-%d %H:%M:%S}: run.py --grid-index {index}\n")
            log.flush()
            # A session of its own: a Ctrl-C in the terminal reaches the bench, which passes it on once.
            process = subprocess.Popen(
                [sys.executable, RUN_PY, *command, "--grid-index", str(index)],
                stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True,
            )  # fmt: skip
            running[process] = (index, log, time.time())
        if RECEIVED:
            _stop_cells(running)
            raise Stopped(RECEIVED[0])
        if waiting and time.time() >= deadline and not running:
            print(f"{len(waiting)} cells not started: --start-cells-for has passed", flush=True)
            break
        time.sleep(0.5)
        for process in [process for process in running if process.poll() is not None]:
            index, log, began = running.pop(process)
            log.close()
            failed += process.returncode != 0
            print(
                f"cell {index} ended (exit {process.returncode}) after {time.time() - began:.0f} s; "
                f"{len(waiting) + len(running)} left, {(time.time() - started) / 60:.1f} min so far",
                flush=True,
            )
    return failed, len(waiting)


def _stop_cells(running: dict) -> None:
    """Passes each received signal on to the running cells (run.py stops after its iteration in progress,
    saving its checkpoint; at a second signal, at once) and waits for them all."""
    print(f"{signal.Signals(RECEIVED[0]).name}: stopping the {len(running)} running cells", file=sys.stderr)
    passed_on = 0
    while running:
        for signum in RECEIVED[passed_on:]:
            for process in running:
                process.send_signal(signum)
            passed_on += 1
        time.sleep(0.2)
        for process in [process for process in running if process.poll() is not None]:
            running.pop(process)[1].close()


def run_grid_at_once(command: list[str], root: Path, jobs: int, minutes: float | None) -> int:
    """The grid's cells over `jobs` processes, tuning before final, then its summary; the exit code: 0 when
    every final cell finished, 1 when one did not (failed, not started, or left to another process that
    holds it), 128 + the signal's number when stopped."""
    deadline = time.time() + 60 * minutes if minutes is not None else float("inf")
    tuning, final = grid_cells(command)
    logs = Path(f"{root}.cell-logs")
    logs.mkdir(parents=True, exist_ok=True)
    print(
        f"{len(tuning)} tuning cells, then {len(final)} final cells, {jobs} at a time; logs in {logs}",
        flush=True,
    )
    RECEIVED.clear()
    handlers = {signum: signal.signal(signum, _note_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_cells_at_once(command, tuning, jobs, logs, deadline)
        run_cells_at_once(command, final, jobs, logs, deadline)
    except Stopped as stop:
        print(
            f"stopped by {stop}; the cells that were running saved their checkpoints: run the same command "
            "again to continue the grid",
            file=sys.stderr,
        )
        return 128 + stop.signum
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    if not root.is_dir():
        print("no cell ran: run the same command again to run them", file=sys.stderr)
        return 1
    code = run_main(["--summarize", str(root)])
    # The grid's own account of its cells: a cell another process held was left to it, not run here.
    unfinished = [run.cell for run in load_runs(root) if not run.ok]
    if unfinished:
        print(
            f"{len(unfinished)} cells did not finish ({', '.join(unfinished)}): run the same command again "
            "to run, resume or retry them",
            file=sys.stderr,
        )
    return code or int(bool(unfinished))


def write_bench_record(root: Path, info: dict) -> None:
    """ROOT/bench.json: this invocation's command, exit code, wall time and machine, the earlier
    invocations' records kept under "earlier" (a grid continued over several sessions has a wall time per
    session). Nothing where the grid refused before training (exit code 2: the folder may be another's),
    nor over a bench.json this bench did not write."""
    if info["exit_code"] == 2:
        return
    path = root / "bench.json"
    earlier: list = []
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            previous = None
        if not (isinstance(previous, dict) and {"command", "exit_code", "wall_time_s"} <= previous.keys()):
            print(f"note: {path} was not written by this bench; left as it is, this run's record not written")
            return
        earlier = [*previous.pop("earlier", []), previous]
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**info, **({"earlier": earlier} if earlier else {})}, indent=2) + "\n")


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
        "--eval-every", str(args.eval_every),
        "--image-every", str(args.eval_every),
        "--ckpt-every", str(args.steps),
        "--eval-samples", str(args.eval_samples),
        "--accelerator", args.accelerator,
        "--output", str(root),
    ]  # fmt: skip
    if any(trains_an_augmenter(arm) for arm in args.augments.split(",")):
        command += ["--augmenter-width", str(args.width), "--augmenter-steps", str(args.augmenter_steps)]
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
        # per process that trains: the bench's own, or each cell's with --jobs
        "torch_threads": torch.get_num_threads()
        if args.jobs == 1
        else int(os.environ.get("OMP_NUM_THREADS", "1")),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print("python run.py " + " ".join(command), flush=True)
    started = time.time()
    code = (
        run_main(command)
        if args.jobs == 1
        else run_grid_at_once(command, root, args.jobs, args.start_cells_for)
    )
    wall = time.time() - started
    info = {"command": "python run.py " + " ".join(command), "exit_code": code, "wall_time_s": round(wall, 1)}
    info["jobs"] = args.jobs
    info["machine"] = machine
    write_bench_record(root, info)
    report = root / "ablation.md"
    if report.is_file():
        print(report.read_text())
    print(f"grid wall time {wall / 60:.1f} min on {machine}; exit code {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())

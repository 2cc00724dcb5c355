"""Benchmark: how long `run.py` takes to answer without training, against `python -c "import torch"`.

The target: `--help`, `--print-config` and every argument error return within 1.2x the time of
`import torch` (they import neither Lightning nor the model modules). Each command runs as a fresh
subprocess of this interpreter from the repository root: one warm-up each, then `--repeats` rounds
that run every command once; the median wall time of each. Also the time a tiny run (`--model gan
--data digits --max-steps 1`) takes to its first training iteration, read from the lines the run prints
as they arrive:

- "set-up done": the `model: ...` line, printed once the data is loaded and the model and Trainer are
  built, just before `Trainer.fit`;
- "first iteration done": the `trained 1 iteration in ...` line, printed when `fit` returns after its
  one iteration (so it includes Lightning's fit start-up and tear-down; the final evaluation comes after).

    python bench/startup.py [--repeats 7] [--json startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_RATIO = 1.2
TINY_RUN = ["--model", "gan", "--data", "digits", "--max-steps", "1"]
# (label, arguments after `python`, expected exit code); the first is the yardstick.
COMMANDS = [
    ('python -c "import torch"', ["-c", "import torch"], 0),
    ("run.py --help", ["run.py", "--help"], 0),
    ("run.py --version", ["run.py", "--version"], 0),
    (
        "run.py --print-config (gan, digits)",
        ["run.py", "--model", "gan", "--data", "digits", "--print-config"],
        0,
    ),
    ("run.py --model nosuchmodel (argument error)", ["run.py", "--model", "nosuchmodel"], 2),
    (
        "run.py --model rae --data digits (resolve error)",
        ["run.py", "--model", "rae", "--data", "digits", "--print-config"],
        2,
    ),
]
MARKERS = {
    "set-up done (model line)": "model: ",
    "first iteration done (trained line)": "trained 1 iteration",
}


def environment() -> dict[str, str]:
    env = dict(os.environ)
    # The repository's own code, whatever is installed; no cluster job is simulated by accident.
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for variable in ("SLURM_NTASKS", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        env.pop(variable, None)
    return env


def time_command(arguments: list[str], expected_code: int) -> float:
    """Wall seconds of one `python <arguments>` run from the repository root."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *arguments],
        cwd=REPO,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if result.returncode != expected_code:
        raise SystemExit(f"{arguments} exited {result.returncode}, expected {expected_code}: {result.stderr}")
    return seconds


def time_first_step() -> dict[str, float]:
    """Seconds from launching the tiny run to each marker line of its output."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-u", "run.py", *TINY_RUN, "--output", str(Path(folder) / "run")]
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=REPO, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        seen: dict[str, float] = {}
        assert process.stdout is not None
        for line in process.stdout:
            for name, prefix in MARKERS.items():
                if name not in seen and line.startswith(prefix):
                    seen[name] = time.perf_counter() - started
        process.wait()
        seen["whole run (with final evaluation)"] = time.perf_counter() - started
    if process.returncode != 0 or len(seen) != len(MARKERS) + 1:
        raise SystemExit(f"the tiny run exited {process.returncode}; markers seen: {sorted(seen)}")
    return seen


def processor_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per command, after one warm-up")
    parser.add_argument(
        "--first-step-repeats", type=int, default=5, help="timed tiny runs, after one warm-up"
    )
    parser.add_argument("--json", default="startup.json", help="where to write the results")
    args = parser.parse_args()
    if args.repeats < 1 or args.first_step_repeats < 1:
        parser.error("--repeats and --first-step-repeats must be at least 1")

    machine = {
        "processor": processor_name(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": version("torch"),
        "pytorch_lightning": version("pytorch-lightning"),
        "load_average_before": os.getloadavg(),
    }
    for _, arguments, code in COMMANDS:
        time_command(arguments, code)  # warm-up: file caches, .pyc files
    # Round by round, every command once per round: a change in the machine's load touches all alike.
    runs: dict[str, list[float]] = {label: [] for label, _, _ in COMMANDS}
    for _ in range(args.repeats):
        for label, arguments, code in COMMANDS:
            runs[label].append(time_command(arguments, code))
    commands = [
        {"command": label, "runs_s": times, "median_s": statistics.median(times)}
        for label, times in runs.items()
    ]
    yardstick = commands[0]["median_s"]
    for entry in commands:
        entry["ratio_to_import_torch"] = entry["median_s"] / yardstick

    time_first_step()  # warm-up
    first_step_runs = [time_first_step() for _ in range(args.first_step_repeats)]
    first_step = {name: {"runs_s": [run[name] for run in first_step_runs]} for name in first_step_runs[0]}
    for entry in first_step.values():
        entry["median_s"] = statistics.median(entry["runs_s"])
    machine["load_average_after"] = os.getloadavg()
    goal_holds = all(entry["ratio_to_import_torch"] <= GOAL_RATIO for entry in commands[1:])

    print(
        f"machine: {machine['processor']}, {machine['cpus']} CPUs, Python {machine['python']}, "
        f"torch {machine['torch']}, pytorch-lightning {machine['pytorch_lightning']}; load average "
        f"{machine['load_average_before'][0]:.1f} before, {machine['load_average_after'][0]:.1f} after"
    )
    print(f"median of {args.repeats} runs after one warm-up, wall seconds\n")
    width = max(len(entry["command"]) for entry in commands)
    print(f"{'command':<{width}}  {'median s':>8}  {'x import torch':>14}")
    for entry in commands:
        print(
            f"{entry['command']:<{width}}  {entry['median_s']:8.2f}  {entry['ratio_to_import_torch']:14.2f}"
        )
    verdict = "holds" if goal_holds else "does not hold"
    print(f"\ngoal 4 (every answer within {GOAL_RATIO}x import torch): {verdict}")
    print(f"\ntiny run `run.py {' '.join(TINY_RUN)}`, median of {args.first_step_repeats} after one warm-up:")
    for name, entry in first_step.items():
        print(f"  {name:<38} {entry['median_s']:6.2f} s")

    results = {
        "machine": machine,
        "repeats": args.repeats,
        "commands": commands,
        "goal_ratio": GOAL_RATIO,
        "goal_holds": goal_holds,
        "tiny_run": {"arguments": TINY_RUN, "repeats": args.first_step_repeats, "markers": first_step},
    }
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

"""run.py in-process under a diagnostic probe's patches, with a run folder that says it was patched.

A probe (bench/probe_began_nets.py, bench/probe_began_reference.py) replaces nets or a training step and
then runs the product's own command line, so its run folder is a product run in every file but one:
config.yaml's first line would offer `python run.py --config ...` as the way to repeat it, and that
command runs the unpatched code. Here that line names the probe's own command instead.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import lightning_genae.experiment.train as train


def model_named(run_arguments: list[str]) -> str | None:
    """The --model of run.py's arguments, read as run.py reads it (`--model x` or `--model=x`)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--model")
    return parser.parse_known_args(run_arguments)[0].model


def run_patched(script: str, probe_arguments: list[str], run_arguments: list[str]) -> int:
    """Run run.py's `run_arguments` in this process; config.yaml's header names `script` and its arguments."""
    write_header = train._write_run_header
    command = shlex.join(["python", script, *probe_arguments, "--", *run_arguments])

    def header_naming_the_probe(config: Any, run_dir: Path, *rest: Any) -> None:
        write_header(config, run_dir, *rest)
        path = run_dir / "config.yaml"
        _, body = path.read_text().split("\n", 1)
        path.write_text(
            f"# lightning-genae run patched by {script}: `python run.py --config` runs the unpatched code "
            f"and does not repeat it; re-run with: {command}\n{body}"
        )

    train._write_run_header = header_naming_the_probe
    from lightning_genae.experiment.cli import main as run

    return run(run_arguments)

"""`--help`, `--version`, `--print-config` and configuration errors answer without importing Lightning.

Each of them waits only for what parsing and `resolve` need (torch included); Lightning and the libraries
that only training, evaluation or plotting use are imported by those modes alone. Timings are in
bench/startup.py and docs/performance.md, never here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Libraries that only training, evaluation, logging or plotting use.
NOT_FOR_PARSING = (
    "pytorch_lightning",
    "lightning_fabric",
    "torchvision",
    "torchmetrics",
    "wandb",
    "matplotlib",
)

# Every case runs in one fresh interpreter, in order; each reports the libraries it imported.
PROBE = """
import contextlib, io, json, sys
from lightning_genae.experiment.cli import main

heavy = {heavy!r}
report = []
for argv in {cases!r}:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
    imported = [name for name in heavy if name in sys.modules]
    report.append({{"argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                   "imported": imported}})
print(json.dumps(report))
"""

CASES = [
    ["--help"],
    ["--version"],
    ["--model", "gan", "--data", "digits", "--print-config"],
    ["--model", "nosuchmodel"],
    # resolve() errors: a model for another kind of data, an out-of-range family option, a stray option.
    ["--model", "rae", "--data", "digits", "--print-config"],
    ["--model", "gan", "--data", "digits", "--lr", "-1", "--print-config"],
    ["--model", "ae", "--data", "digits", "--gan-loss", "hinge", "--print-config"],
]


def run_probe(tmp_path: Path) -> list[dict]:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    for variable in ("SLURM_NTASKS", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        environment.pop(variable, None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=NOT_FOR_PARSING, cases=CASES)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
def test_help_print_config_and_config_errors_do_not_import_lightning(tmp_path):
    report = run_probe(tmp_path)
    by_case = {" ".join(case["argv"]): case for case in report}
    assert by_case["--help"]["code"] == 0 and "--model" in by_case["--help"]["stdout"]
    assert by_case["--version"]["code"] == 0 and "lightning-genae" in by_case["--version"]["stdout"]
    printed = by_case["--model gan --data digits --print-config"]
    assert printed["code"] == 0 and "model: gan" in printed["stdout"] and "data: digits" in printed["stdout"]
    for case in report[3:]:
        # One line naming the fix, exit code 2, as for every bad input, kept without Lightning.
        assert case["code"] == 2, case
        assert len(case["stderr"].strip().splitlines()) == 1 and "error:" in case["stderr"], case
    assert "nosuchmodel" in by_case["--model nosuchmodel"]["stderr"]
    assert "sequence data" in by_case["--model rae --data digits --print-config"]["stderr"]
    assert not list(tmp_path.iterdir()), "parsing and errors write nothing"
    for case in report:
        assert case["imported"] == [], f"{' '.join(case['argv'])} imported {case['imported']}"


@pytest.mark.parametrize("argv", [["--help"], ["--data", "nosuch", "--output", "out"]], ids=["help", "bad"])
def test_the_feature_classifier_command_answers_help_and_bad_arguments_without_lightning(argv, tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lightning_genae.experiment.classifier", *argv],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    timings = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    messages = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in timings}
    assert not imported & set(NOT_FOR_PARSING), sorted(imported & set(NOT_FOR_PARSING))
    if argv == ["--help"]:
        assert result.returncode == 0 and "--data" in result.stdout
    else:
        assert result.returncode == 2 and "nosuch" in messages[-1]
    assert not list(tmp_path.iterdir())

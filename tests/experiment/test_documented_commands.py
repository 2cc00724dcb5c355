"""Every `python run.py ...` command that README.md and docs/ show is read by the parser as written, and each
single run among them resolves (every option known, read by what the run chose, in range): an option that
moves or is renamed cannot leave a documented command behind."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lightning_genae.experiment.ablation.tuning import split_candidates
from lightning_genae.experiment.arguments import build_parser, command_line_values
from lightning_genae.experiment.classifier import build_prepare_parser
from lightning_genae.experiment.config import RunConfig
from lightning_genae.experiment.resolve import resolve

REPO = Path(__file__).resolve().parents[2]
# docs/plugins.md's commands need its plug-in module, which tests/library/test_plugins.py runs them with.
PAGES = [REPO / "README.md", *sorted(page for page in (REPO / "docs").glob("*.md") if page.stem != "plugins")]
# Words the pages use for what the reader fills in.
PLACEHOLDERS = {"DATA": "data", "S": "0", "M": "gan", "DIR": "images", "OUT": "out", "N": "1000"}
# Modes whose other flags are read when they run (a checkpoint, a folder, a grid root), not resolved here.
NOT_A_SINGLE_RUN = ("--evaluate", "--evaluate-folder", "--summarize", "--config", "--help", "--seeds")


def command_lines(text: str) -> list[str]:
    """What follows `python run.py` in each command of a page: in code blocks (continued lines joined) and
    in inline code spans (which a paragraph may wrap over several lines)."""
    lines = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        lines += re.findall(r"python run\.py([^\n`]*)", re.sub(r"\\\n\s*", " ", block))
    outside_blocks = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    lines += [" ".join(span.split()) for span in re.findall(r"`python run\.py([^`]*)`", outside_blocks)]
    return lines


def documented_commands() -> list[tuple[str, list[str]]]:
    """(page: first words, run.py's arguments) for each complete command the pages show."""
    commands = []
    for page in PAGES:
        for line in command_lines(page.read_text()):
            line = line.split(" #")[0].strip()
            if line.count('"') % 2 and line.endswith('"'):
                line = line[:-1]  # a command quoted for another one (`sbatch --wrap "python run.py ..."`)
            if any(mark in line for mark in ("...", "$", "[", "{")):
                continue  # an elided or templated command (`run.py ...`, `$GRID`, `[--eval-samples N]`)
            args = [PLACEHOLDERS.get(word, word) for word in shlex.split(line)]
            commands.append((f"{page.name}: run.py {' '.join(args)[:60]}", args))
    return commands


COMMANDS = documented_commands()
# The arguments of each `genae prepare` command line the pages show (a code block's line begins with it).
PREPARE_COMMANDS = [
    shlex.split(line.split(" #")[0])
    for page in PAGES
    for line in re.findall(r"^genae prepare([^\n]*)", page.read_text(), flags=re.MULTILINE)
]


def test_the_pages_show_commands_to_replay() -> None:
    assert len(COMMANDS) >= 40, [name for name, _ in COMMANDS]


@pytest.mark.parametrize("args", [args for _, args in COMMANDS], ids=[name for name, _ in COMMANDS])
def test_a_documented_command_parses_and_a_single_run_resolves(args: list[str]) -> None:
    if "--help" in args:
        return  # the parser prints and exits; tests/experiment/test_startup.py times it
    values, candidates = split_candidates(command_line_values(build_parser(), args))
    single_run = not any(flag in args for flag in NOT_A_SINGLE_RUN) and "," not in values.get("augment", "")
    if not single_run or candidates or len(values.get("train_size", [None])) > 1:
        return
    values.pop("print_config", None)
    values["train_size"] = values.get("train_size", [None])[0]
    resolved = resolve(RunConfig.from_dict(values))
    assert resolved.config.model == values.get("model", "gan")


@pytest.mark.parametrize("args", PREPARE_COMMANDS)
def test_a_documented_prepare_command_parses(args: list[str]) -> None:
    parsed = build_prepare_parser().parse_args(args)
    assert parsed.data and parsed.output

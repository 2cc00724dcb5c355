"""Every bad input in tests/cases/bad_inputs.csv is an exit 2 with one line naming the fix.

Each row of the file is run through `lightning_genae.experiment.cli.main` in-process, and the test asserts
exit code 2, exactly one line on stderr, no traceback, the message, and that no run folder (nor `--output`)
was left behind. A row reads

    <command-line arguments>,<start of the message>

(CSV: a cell holding a comma or a quote is quoted). The message is what follows `error: ` on stderr
(argparse's own errors included). Either column
may name a file that the test makes, in braces:

    {out}              a path for --output that does not exist yet (it must still not exist afterwards)
    {binary_file}      a file of random bytes
    {run}              a finished 3-iteration ae run folder on digits
    {ckpt}             that run's checkpoints/last.ckpt
    {ckpt_no_config}   the same checkpoint without its run configuration
    {three_images}     a folder of three PNG images
    {mnist_no_labels}  a data dir whose MNIST/raw lacks train-labels-idx1-ubyte (and nothing can be
                       downloaded: the network is refused)

To add a bad input: add a row to tests/cases/bad_inputs.csv (and a fixture here if it needs a new file).
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import typing
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import TINY_RUN

from lightning_genae.augmentation import AUGMENTATIONS, augmentation_options
from lightning_genae.augmentation.adaptive import ControllerOptions
from lightning_genae.checkpoint import CONFIG_KEY
from lightning_genae.experiment.cli import main
from lightning_genae.experiment.config import CONFIG_FIELDS, Precision, RunConfig, flag
from lightning_genae.models import MODELS
from lightning_genae.plugin_options import PluginOptions

pytestmark = pytest.mark.quick

CASES = Path(__file__).resolve().parents[1] / "cases" / "bad_inputs.csv"
RELIABILITY = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


def bad_input_rows() -> list[tuple[str, str]]:
    """(arguments, message) of every row of tests/cases/bad_inputs.csv."""
    with CASES.open(newline="") as file:
        rows = [(row["arguments"], row["message"]) for row in csv.DictReader(file)]
    assert len(rows) >= 20, f"{CASES} was not found or lost rows"
    return rows


def documented_messages() -> dict[str, str]:
    """docs/reliability.md's table of bad inputs: each input and the start of the message it shows."""
    rows = re.findall(r"^\| `(.+?)` \| `(.+)` \|$", RELIABILITY.read_text(), re.MULTILINE)
    return {arguments.replace("\\|", "|"): message for arguments, message in rows}


DOCUMENTED = documented_messages()


def test_every_documented_bad_input_is_a_tested_row() -> None:
    assert len(DOCUMENTED) >= 20, f"{RELIABILITY}'s table was not found"
    assert set(DOCUMENTED) <= {arguments for arguments, _ in bad_input_rows()}


ROWS = bad_input_rows()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_ae_run: Path) -> dict[str, Path]:
    """The files the table's placeholders name, made once."""
    root = tmp_path_factory.mktemp("bad-inputs")
    binary = root / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    ckpt = tiny_ae_run / "checkpoints" / "last.ckpt"
    contents = torch.load(ckpt, map_location="cpu", weights_only=True)
    no_config = root / "no-config.ckpt"
    torch.save({key: value for key, value in contents.items() if key != CONFIG_KEY}, no_config)
    images = root / "three-images"
    images.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8), dtype=np.uint8)
    for index, pixels in enumerate(noise):
        Image.fromarray(pixels).save(images / f"{index}.png")
    mnist = root / "mnist-no-labels"
    raw = mnist / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"")
    # A run's config.yaml with options set to null, as an edit might leave them.
    null_seed = root / "null-seed.yaml"
    null_seed.write_text((tiny_ae_run / "config.yaml").read_text().replace("\nseed: 0\n", "\nseed: null\n"))
    null_devices = root / "null-devices.yaml"
    text = (tiny_ae_run / "config.yaml").read_text()
    null_devices.write_text(
        "\n".join("devices: null" if line.startswith("devices:") else line for line in text.splitlines())
    )
    # A user's files of a run's names, which no run wrote.
    users_files = root / "users-files"
    users_files.mkdir()
    (users_files / "config.yaml").write_text("model: ae\n")
    (users_files / "metrics.csv").write_text("step,loss\n0,1.0\n")
    # A user's files of the names a run writes, in a folder that holds no run.
    users_run_names = root / "users-run-names"
    (users_run_names / "images").mkdir(parents=True)
    (users_run_names / "eval.json").write_text("{}")
    (users_run_names / "images" / "samples_step0000001.png").write_bytes(b"mine")
    return {
        "users_files": users_files,
        "users_run_names": users_run_names,
        "null_seed": null_seed,
        "null_devices": null_devices,
        "binary_file": binary,
        "run": tiny_ae_run,
        "ckpt": ckpt,
        "ckpt_no_config": no_config,
        "three_images": images,
        "mnist_no_labels": mnist,
    }


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads fail at once, as on a machine without network."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code (argparse's SystemExit included) and stderr of one in-process command line."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert "error: " in lines[0], lines[0]
    assert lines[0].split("error: ", 1)[1].startswith(expected), (
        f"{lines[0]!r} does not start with {expected!r}"
    )


@pytest.mark.parametrize(("args", "message"), ROWS, ids=[args for args, _ in ROWS])
def test_bad_input_exits_2_with_one_line_naming_the_fix(
    args: str, message: str, files, tmp_path, monkeypatch, capsys, offline
) -> None:
    monkeypatch.chdir(tmp_path)
    places = {name: str(path) for name, path in files.items()} | {"out": str(tmp_path / "out")}
    before = set(tmp_path.iterdir())
    code, err = run_main(shlex.split(args.format(**places)), capsys)
    assert_one_line_error(code, err, message.format(**places))
    if args in DOCUMENTED:  # the documentation shows what the command line prints
        assert_one_line_error(code, err, DOCUMENTED[args].format(**places))
    assert set(tmp_path.iterdir()) == before, "bad input must not leave a run folder behind"


def takes_floats(kind: object) -> bool:
    """Whether an option of type `kind` (`float`, `float | Literal["auto"]`) holds floats."""
    return float in (kind, *typing.get_args(kind))


def numeric_options() -> list[tuple[str, list[str]]]:
    """Every float option (RunConfig's, the augmentations', the families') and the arguments that read it."""
    cases = [(name, []) for name in CONFIG_FIELDS if takes_floats(RunConfig.types()[name])]
    for name, (kind, _) in augmentation_options().items():
        if not takes_floats(kind):
            continue
        if name in ControllerOptions.types():  # read by ADA's controller, which --augment-p auto runs
            cases.append((name, ["--augment", "ae", "--augment-p", "auto"]))
        else:  # pick an augmentation that reads it at its other options' defaults
            augment = next(
                augment
                for augment, spec in AUGMENTATIONS.items()
                if name in spec.options.types() and name not in spec.options().unread()
            )
            cases.append((name, ["--augment", augment]))
    seen = set()
    for family, spec in MODELS.items():
        for name, kind in spec.options.types().items():
            if takes_floats(kind) and name not in seen:
                seen.add(name)
                data = ["--data", "sines"] if spec.module.data_kind == "sequence" else []
                cases.append((name, ["--model", family, *data, *choice_that_reads(spec.options, name)]))
    return cases


def choice_that_reads(options: type[PluginOptions], name: str) -> list[str]:
    """No flags where the family reads `name` at its defaults, else one choice that makes it read it
    (BEGAN's --ebgan-margin needs --d-loss ebgan): an unread option is refused before its value is checked."""
    if name not in options().unread():
        return []
    return next(
        [flag(other), str(choice)]
        for other in options.types()
        for choice in options.choices(other)
        if name not in options.parse({other: choice}).unread()
    )


NUMERIC = numeric_options()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize(("name", "context"), NUMERIC, ids=[name for name, _ in NUMERIC])
def test_every_float_option_must_be_finite(name, context, value, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    # `--x=-inf`: argparse would read a separate `-inf` as an option. The parser reads no number there.
    code, err = run_main([*context, f"{flag(name)}={value}", "--print-config"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and flag(name) in err, err
    # YAML's .nan and .inf are floats, which the option's own check refuses.
    (tmp_path / "c.yaml").write_text(f"{name}: {value.replace('nan', '.nan').replace('inf', '.inf')}\n")
    code, err = run_main([*context, "--config", "c.yaml", "--print-config"], capsys)
    assert_one_line_error(code, err, f"{flag(name)} must be a finite number")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["c.yaml"]


def test_the_finiteness_check_covers_float_options_of_every_kind() -> None:
    names = {name for name, _ in NUMERIC}
    assert {"lr", "beta", "denoise", "augment_noise", "augment_p", "augment_interp", "ema"} <= names
    assert {"ada_target", "ada_kimg"} <= names


@pytest.mark.parametrize("precision", typing.get_args(Precision))
def test_every_offered_precision_trains_a_tiny_run(precision, tmp_path, capsys) -> None:
    code = main(
        ["--model", "ae", *TINY_RUN, "--max-steps", "2", "--precision", precision, "--output", str(tmp_path)]
    )
    assert code == 0
    assert capsys.readouterr().err == ""
    ran = json.loads((tmp_path / "summary.json").read_text())["precision"]
    # Lightning runs fp16 autocast on a GPU only; elsewhere the summary records the bf16 it ran.
    expected = {"32": "32-true", "16-mixed": "16-mixed" if torch.cuda.is_available() else "bf16-mixed"}
    assert ran == expected.get(precision, precision)


def test_a_batch_larger_than_the_data_is_refused_before_the_run_is_announced(tmp_path, capsys) -> None:
    try:
        code = main(
            ["--model", "ae", "--data", "digits", "--batch-size", "5000", "--output", str(tmp_path / "out")]
        )
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.err, "--batch-size 5000 exceeds the 1258 training images")
    assert "run folder:" not in captured.out and "model:" not in captured.out, captured.out

"""The commands of one dataset: the one that trains its feature classifier and records it in its manifest (a
GRU for a sequence dataset, `sequence_classifier.SEQUENCE_DATASETS`, else a CNN), and `genae prepare`, which
writes its splits once in LitData's chunked format for runs that stream their training data (`--data NAME
--data-dir PREPARED`).

    python -m lightning_genae.experiment.classifier --data mnist --data-dir DATA --seed 0 \
        --output lightning_genae/metrics/weights
    genae prepare --data mnist --data-dir DATA --output PREPARED
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse import ActionYesNo
from jsonargparse.typing import PositiveInt
from torch import nn

from lightning_genae.datamodules import (
    DATASETS,
    build_datamodule,
    dataset_options,
    default_data_dir,
    parse_dataset_options,
)
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.program import CommandLineParser, one_line_border
from lightning_genae.metrics import classifier as image_classifier
from lightning_genae.metrics import sequence_classifier
from lightning_genae.plugin_loading import PLUGINS_VARIABLE, load_plugins
from lightning_genae.plugin_options import flag, help_with_default, option_specs, typed_flag

PROG = "python -m lightning_genae.experiment.classifier"
PREPARE_PROG = "genae prepare"


@dataclass(frozen=True)
class TrainedClassifier:
    """What the command writes for one trained classifier, whichever kind it is."""

    model: nn.Module
    test_accuracy: float
    num_test: int
    epochs: int
    input_shape: dict[str, list[int]]
    # SHA-256 of an image training split, which a run given the file compares with its own.
    train_sha256: str | None = None


def given_dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """The dataset options given on the command line, in their declared order."""
    return {name: value for name in dataset_options() if (value := getattr(args, name, None)) is not None}


def _train_image(args: argparse.Namespace) -> TrainedClassifier:
    options = parse_dataset_options(args.data, given_dataset_options(args))
    data_dir = args.data_dir or default_data_dir()
    datamodule = build_datamodule(args.data, data_dir=data_dir, **options.to_dict())
    datamodule.prepare_data()
    datamodule.setup()
    patience = image_classifier.PATIENCE if args.patience is None else (args.patience or None)
    model, test_accuracy = image_classifier.train_classifier(
        datamodule, seed=args.seed, epochs=args.epochs, patience=patience, verbose=True
    )
    return TrainedClassifier(
        model=model,
        test_accuracy=test_accuracy,
        num_test=datamodule.split_size("test"),
        epochs=args.epochs or image_classifier.default_epochs(datamodule.split_size("train")),
        input_shape={"image_shape": list(model.config.image_shape)},
        train_sha256=datamodule.content_sha256("train"),
    )


def _train_sequence(args: argparse.Namespace) -> TrainedClassifier:
    splits = sequence_classifier.SEQUENCE_DATASETS[args.data](args.data_dir or default_data_dir())
    epochs = args.epochs or sequence_classifier.DEFAULT_EPOCHS
    model, test_accuracy = sequence_classifier.train_sequence_classifier(
        splits, seed=args.seed, epochs=epochs, verbose=True
    )
    return TrainedClassifier(
        model=model,
        test_accuracy=test_accuracy,
        num_test=len(splits["test"][0]),
        epochs=epochs,
        input_shape={"series_shape": [model.config.seq_len, model.config.channels]},
    )


def reproduce_command(args: argparse.Namespace, plugins: Sequence[str] = ()) -> str:
    """The command line that writes the same file again (with a plug-in dataset's `plugins` to import)."""
    prefix = [f"{PLUGINS_VARIABLE}={','.join(plugins)}"] if plugins else []
    parts = [*prefix, PROG, f"--data {args.data}"]
    if args.data_dir is not None:
        parts.append(f"--data-dir {shlex.quote(args.data_dir)}")
    for name, value in given_dataset_options(args).items():
        parts.append(
            typed_flag(name, value) if isinstance(value, bool) else f"{flag(name)} {shlex.quote(str(value))}"
        )
    parts.append(f"--seed {args.seed}")
    if args.epochs is not None:
        parts.append(f"--epochs {args.epochs}")
    if args.patience is not None:
        parts.append(f"--patience {args.patience}")
    parts.append(f"--output {shlex.quote(args.output)}")
    return " ".join(parts)


def dataset_parser(prog: str, description: str, declared: dict[str, tuple[Any, Any]]) -> CommandLineParser:
    """A parser of --data, --data-dir and the dataset options `declared`, typed as run.py's (unset: None)."""
    parser = CommandLineParser(prog=prog, description=description)
    parser.add_argument("--data", required=True, type=Literal[tuple(sorted(DATASETS))], help="dataset name")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="the dataset's folder, as for run.py (for mnist and smnist, the one holding MNIST/raw); "
        "default: $GENAE_DATA_DIR when that is set, else ./data",
    )
    for name, (kind, spec) in declared.items():
        reading = {"action": ActionYesNo(no_prefix="no-")} if kind is bool else {"type": kind}
        parser.add_argument(flag(name), **reading, default=None, help=help_with_default(name, spec))
    return parser


def build_parser(prog: str = PROG) -> CommandLineParser:
    parser = dataset_parser(
        prog,
        "Train the feature classifier of a labelled dataset (a CNN for images, a GRU for sequence datasets), "
        "write its checkpoint and update the manifest in --output.",
        option_specs({name: spec.options for name, spec in DATASETS.items() if spec.data_kind == "image"}),
    )
    parser.add_argument(
        "--seed", type=int, default=image_classifier.DEFAULT_SEED, help="training seed (0 for shipped ones)"
    )
    parser.add_argument(
        "--epochs",
        type=PositiveInt | None,
        default=None,
        help="default: scaled to the training split for images, "
        f"{sequence_classifier.DEFAULT_EPOCHS} for sequences",
    )
    parser.add_argument(
        "--patience",
        type=int | None,
        default=None,
        help="image classifiers: stop once validation accuracy has not risen for this many epochs, 0 to "
        f"train every epoch [default: {image_classifier.PATIENCE}]",
    )
    # Required, so that a forgotten flag never overwrites the shipped classifiers.
    parser.add_argument(
        "--output",
        required=True,
        help="folder for the checkpoint and its manifest (lightning_genae/metrics/weights reproduces a "
        "shipped one over it)",
    )
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Train, save and record one classifier, behind the command's one border (`one_line_border`)."""
    return one_line_border(lambda: _main(argv, prog))


def _main(argv: Sequence[str] | None, prog: str) -> int:
    built_in = set(DATASETS)
    # Before the parser: a plug-in's dataset is one of --data's choices, as for run.py.
    plugins = load_plugins()
    args = build_parser(prog).parse_args(argv)
    if args.epochs is not None:
        args.epochs = int(args.epochs)  # a plain int: it goes into the checkpoint, which a safe load reads
    sequence = args.data in sequence_classifier.SEQUENCE_DATASETS
    if DATASETS[args.data].data_kind == "sequence":
        # The command's dataset flags are image options: a sequence dataset refuses every one given.
        parse_dataset_options(args.data, given_dataset_options(args))
        if not sequence:
            # A series classifier's recipe (its splits, its labels) is written per dataset: generated series
            # and a CSV carry no labels, and a plug-in's series dataset has no recipe here.
            raise ConfigError(
                f"{args.data}: a feature classifier of series is trained for "
                f"{', '.join(sequence_classifier.SEQUENCE_DATASETS)} only"
            )
    train, kind = (_train_sequence, sequence_classifier) if sequence else (_train_image, image_classifier)
    started = time.perf_counter()
    trained = train(args)
    seconds = time.perf_counter() - started
    output = Path(args.output)
    path = output / kind.checkpoint_name(args.data)
    meta: dict[str, Any] = {
        "data": args.data,
        "seed": args.seed,
        "epochs": trained.epochs,
        "test_accuracy": trained.test_accuracy,
    }
    if trained.train_sha256 is not None:
        meta["train_sha256"] = trained.train_sha256
    sha256 = image_classifier.save_checkpoint(trained.model, path, **meta, num_test=trained.num_test)
    entry = {
        "file": path.name,
        "sha256": sha256,
        "test_accuracy": round(trained.test_accuracy, 6),
        "num_test": trained.num_test,
        "feature_dim": trained.model.config.feature_dim,
        **trained.input_shape,
        "seed": args.seed,
        "epochs": trained.epochs,
        "command": reproduce_command(args, plugins if args.data not in built_in else ()),
        "train_seconds": round(seconds),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    image_classifier.write_manifest_entry(output, args.data, entry, kind.MANIFEST_NAME)
    print(
        f"{args.data}: test accuracy {trained.test_accuracy:.4%} on {trained.num_test} "
        f"{'series' if sequence else 'images'}, "
        f"{seconds:.0f} s, {path} ({path.stat().st_size / 1024:.0f} KiB, sha256 {sha256})"
    )
    return 0


def build_prepare_parser(prog: str = PREPARE_PROG) -> CommandLineParser:
    parser = dataset_parser(
        prog,
        "Write a dataset's train, val and test splits (as a run reads them) into --output in LitData's "
        "chunked format; a run given --data-dir of that folder streams its training data.",
        dataset_options(),
    )
    parser.add_argument("--output", required=True, help="a new or empty folder for the prepared dataset")
    return parser


def prepare_main(argv: Sequence[str], prog: str) -> int:
    """`genae prepare`: one dataset's splits into --output (within run.py's border, `cli.main`)."""
    load_plugins()
    args = build_prepare_parser(prog).parse_args(argv)
    output = Path(args.output).expanduser()
    # Never written over: what is there was not written by this command.
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"--output {output} is not an empty folder; give a new one")
    options = parse_dataset_options(args.data, given_dataset_options(args))
    datamodule = build_datamodule(
        args.data, data_dir=args.data_dir or default_data_dir(), **options.to_dict()
    )
    from lightning_genae.datamodules.streaming import prepare

    manifest = prepare(datamodule, args.data, output)
    counts = " / ".join(f"{split} {entry['items']}" for split, entry in manifest["splits"].items())
    print(f"prepared {args.data} ({counts}) in {output}; train from it with --data-dir {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`genae prepare`: write a registered dataset's splits once in LitData's chunked format, for runs that
stream their training data (`--data NAME --data-dir PREPARED`).

    genae prepare --data mnist --data-dir DATA --output PREPARED
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from lightning_genae.datamodules import (
    build_datamodule,
    dataset_options,
    default_data_dir,
    parse_dataset_options,
)
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.classifier import dataset_parser, given_dataset_options
from lightning_genae.experiment.program import CommandLineParser, one_line_border
from lightning_genae.plugin_loading import load_plugins

PROG = "genae prepare"


def build_parser(prog: str = PROG) -> CommandLineParser:
    parser = dataset_parser(
        prog,
        "Write a dataset's train, val and test splits (as a run reads them) into --output in LitData's "
        "chunked format; a run given --data-dir of that folder streams its training data.",
        dataset_options(),
    )
    parser.add_argument("--output", required=True, help="a new or empty folder for the prepared dataset")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Prepare one dataset. The command's one border: every GenaeError and OSError met below is one line,
    `error: ...`, with its exit code."""
    return one_line_border(lambda: _prepare(argv, prog))


def _prepare(argv: Sequence[str] | None, prog: str) -> int:
    load_plugins()
    args = build_parser(prog).parse_args(argv)
    output = Path(args.output).expanduser()
    # Never written over: what is there was not written by this command.
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"--output {output} is not an empty folder; give a new one")
    options = parse_dataset_options(args.data, given_dataset_options(args))
    data_dir = args.data_dir or default_data_dir()
    datamodule = build_datamodule(args.data, data_dir=data_dir, **options.to_dict())
    from lightning_genae.datamodules.streaming import prepare

    manifest = prepare(datamodule, args.data, output)
    counts = " / ".join(f"{split} {entry['items']}" for split, entry in manifest["splits"].items())
    print(f"prepared {args.data} ({counts}) in {output}; train from it with --data-dir {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

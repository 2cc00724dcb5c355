"""The command line's parser (jsonargparse): every RunConfig field and plug-in option as a typed flag, the
grid's and evaluation's own flags, and `--config FILE.yaml` read as the same options. Imports no Lightning."""

from __future__ import annotations

import argparse
import functools
import operator
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionYesNo

from lightning_genae import __version__
from lightning_genae.augmentation import AUGMENTATIONS, augmentation_choices, augmentation_options
from lightning_genae.datamodules import DATASETS, dataset_options
from lightning_genae.errors import PLUGIN_HINT, ConfigError
from lightning_genae.experiment.ablation.tuning import candidate_separators, candidate_texts
from lightning_genae.experiment.config import (
    COMMAND_LINE_ONLY,
    CONFIG_FIELDS,
    LOGGER_CHOICES,
    WHOLE_SPLIT,
    RunConfig,
    flag,
)
from lightning_genae.experiment.program import CommandLineParser, command_prefix, program_name
from lightning_genae.models import MODELS
from lightning_genae.plugin_options import did_you_mean, help_with_default, shown_default, shown_value

GROUP_TITLES = {
    "what": "what to train on",
    "training": "optimisation",
    "model": "model (family-specific options say which family takes them)",
    "augmentation": "augmentation (--augment: the augmentations listed below, joined with '+')",
    "hardware": "hardware (passed to the Lightning Trainer)",
    "evaluation": "evaluation (FD/KID/precision/recall on validation, then on the test split at the end)",
    "logging": "logging, outputs, checkpoints",
}


def _choices_epilog() -> str:
    sections = [
        ("models (--model)", {name: spec.description for name, spec in MODELS.items()}),
        ("datasets (--data)", {name: spec.description for name, spec in DATASETS.items()}),
        ("augmentations (--augment, join with '+')", augmentation_choices()),
        ("loggers (--logger)", LOGGER_CHOICES),
    ]
    lines = []
    for title, entries in sections:
        lines.append(f"{title}:")
        width = max(len(name) for name in entries)
        lines += [f"  {name.ljust(width)}  {text}" for name, text in entries.items()]
        lines.append("")
    lines.append(f"example: {command_prefix()} --model gan --data digits --max-steps 200")
    lines.append(f"streaming an image dataset: {command_prefix()} prepare --help")
    return "\n".join(lines)


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _listed(value: Any, what: str, fits: Callable[[Any], bool] = lambda item: True) -> list[Any]:
    """The items of a comma list typed on the command line (`0,1,2`) or of a YAML list (one value: a list of
    one); an empty one, or one that holds lists, mappings or items that do not `fit`, is refused."""
    items = split_list(value) if isinstance(value, str) else value if isinstance(value, list) else [value]
    if not items or not all(not isinstance(item, (list, dict)) and fits(item) for item in items):
        raise argparse.ArgumentTypeError(f"{shown_value(value)} is not {what}")
    return items


def _is_count(item: Any) -> bool:
    return not isinstance(item, bool) and str(item).isdigit()


def _seed_list(value: Any) -> list[int]:
    """`--seeds 0,1,2`, or a YAML list of them."""
    return [int(item) for item in _listed(value, "a whole number or a comma list of them", _is_count)]


TRAIN_SIZES = "a count, `full` or a comma list of them (e.g. 1000,full)"


def _train_sizes(value: Any) -> list[int | None]:
    """`--train-size 1000,5000,full` (or a YAML list): counts of training items, `full` (None) for all."""
    items = _listed(value, TRAIN_SIZES, lambda item: item in (WHOLE_SPLIT, None) or _is_count(item))
    return [None if item in (WHOLE_SPLIT, None) else int(item) for item in items]


def _names(value: Any) -> str:
    """`--augment none,ae` (or a YAML list of names): the names as one comma list, a grid's arms."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _loggers(value: Any) -> list[str]:
    """`--logger csv,wandb`, `--logger csv --logger wandb` or a YAML list, of LOGGER_CHOICES."""
    names = f"one of {', '.join(LOGGER_CHOICES)}, or a comma list of them"
    return [str(item) for item in _listed(value, names, lambda item: item in LOGGER_CHOICES)]


def _devices(value: Any) -> str:
    """`--devices auto`, a count, or device indices `0,1` (or a YAML list), as the text RunConfig holds."""
    return ",".join(map(str, _listed(value, "auto, a count or device indices")))


def _path(value: Any) -> str:
    """A file or folder: an empty one is refused rather than read as the current folder."""
    if not isinstance(value, str) or not value.strip():
        raise argparse.ArgumentTypeError("is empty; give a path" if value == "" else "is not a path")
    return value


# Options read by their own reader: a comma list on the command line, a list in YAML.
_OWN_READERS: dict[str, dict[str, Any]] = {
    "train_size": {"type": _train_sizes, "metavar": "N[,N...]"},
    "augment": {"type": _names},
    "logger": {"type": _loggers, "metavar": "A,B", "action": "extend"},
    "devices": {"type": _devices},
}


def _candidates(name: str, kind: Any) -> Callable[[Any], Any]:
    """A tunable option's reader: one value of `kind`, or candidates to tune (`0.1,0.25`, `a|b`, a list)."""
    one = CommandLineParser(prog=flag(name))
    one.add_argument("--value", type=kind)

    def read(value: Any) -> Any:
        items = candidate_texts(name, value) if isinstance(value, str) else _listed(value, "values")
        try:
            values = [
                (one.parse_args([f"--value={v}"]) if isinstance(v, str) else one.parse_object({"value": v}))
                for v in items
            ]
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix("--value: ")) from None
        return [value.value for value in values] if len(values) > 1 else values[0].value

    return read


def _add_flag(group: Any, name: str, kind: Any, help_text: str, spec: Any = None, **reading: Any) -> None:
    """One option's flag; argparse refuses a plug-in's option that takes the name of another flag."""
    metadata = spec.metadata if spec is not None else {}
    tunable = bool(metadata.get("tunable"))
    if tunable:
        example = "A|B" if candidate_separators(name) == "|" else "X,Y"
        help_text += f"; in a grid with --tune-seeds, {example} lists candidates to tune"
    if kind is bool:
        no_prefix = None if name in ("fast_dev_run", "overwrite") else "no-"
        reading = {"action": ActionYesNo(no_prefix=no_prefix)}
    elif not reading and not (reading := _OWN_READERS.get(name, {})):
        # A YAML null is left to the option's own check.
        if type(None) in typing.get_args(kind):
            kind = functools.reduce(
                operator.or_, (arg for arg in typing.get_args(kind) if arg is not type(None))
            )
        reading = {"type": _path if metadata.get("path") else _candidates(name, kind) if tunable else kind}
    group.add_argument(flag(name), **reading, help=help_text)


def _family_help(name: str) -> tuple[Any, str]:
    """A model option's type and help: which families take it, and each one's default."""
    shown = {
        family: shown_default(name, spec.options.__dataclass_fields__[name])
        for family, spec in MODELS.items()
        if name in spec.options.__dataclass_fields__
    }
    first = next(spec.options for spec in MODELS.values() if name in spec.options.__dataclass_fields__)
    owners = "" if len(shown) == len(MODELS) else "/".join(shown) + ": "
    one = len(set(shown.values())) == 1
    default = (
        next(iter(shown.values())) if one else ", ".join(f"{family} {text}" for family, text in shown.items())
    )
    help_text = first.__dataclass_fields__[name].metadata.get("help", "")
    return first.types()[name], f"{owners}{help_text} [default: {default}]"


def build_parser() -> CommandLineParser:
    """The parser of run.py's flags, cached per program name and plug-ins: adding its flags is slow."""
    registered = tuple(tuple(registry.items()) for registry in (MODELS, DATASETS, AUGMENTATIONS))
    return _parser_for(program_name(), registered)


@functools.lru_cache(maxsize=4)
def _parser_for(program: str, registered: tuple[Any, ...]) -> CommandLineParser:
    parser = CommandLineParser(
        prog=program,
        description="Train autoencoder-based generative models with PyTorch Lightning.",
        epilog=_choices_epilog(),
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="read options from YAML; the command line wins")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help=(
            "print the resolved configuration with absolute paths, as config.yaml records it (less --output, "
            "so a re-run from config.yaml gets a folder of its own), and exit"
        ),
    )
    parser.add_argument("--version", action="version", version=f"lightning-genae {__version__}")
    parser.add_argument(
        "--evaluate",
        metavar="CKPT",
        type=_path,
        help="re-evaluate a saved run's checkpoint (same seeds and N) and write eval.json; "
        "takes --eval-samples, --backbone, --output and hardware options",
    )
    parser.add_argument(
        "--evaluate-folder",
        metavar="DIR",
        type=_path,
        help=(
            "score a folder of PNG/JPG images against --data's test split with every available backbone "
            "(Inception's weights are downloaded if not cached) or the one --backbone names; writes "
            "--output/eval.json"
        ),
    )
    grid = parser.add_argument_group(
        "ablation grid (a comma list in --augment or --train-size, or --seeds, runs one run per cell)"
    )
    grid.add_argument("--seeds", metavar="0,1,2", type=_seed_list, help="run every cell with each seed")
    grid.add_argument(
        "--tune-seeds",
        metavar="S[,S...]",
        type=_seed_list,
        help="with candidate lists (--augment-p 0.1,0.25, --diffaug-policy 'color|translation,cutout'): "
        "run every candidate of each arm with these seeds first, evaluated on the validation split only, "
        "then each arm's best with --seeds; use seeds not in --seeds",
    )
    grid.add_argument(
        "--grid-index",
        metavar="K",
        type=int,
        help="run only cell K of the grid (a SLURM array index; a tuning grid's tuning cells come first)",
    )
    grid.add_argument(
        "--summarize",
        metavar="ROOT",
        type=_path,
        help="rebuild ROOT/ablation.csv, .md and .png from the finished runs of a grid",
    )
    groups = {key: parser.add_argument_group(title) for key, title in GROUP_TITLES.items()}
    for name, spec in CONFIG_FIELDS.items():
        # A switch that acts only when given has no default to show.
        switch = name in ("fast_dev_run", "overwrite")
        help_text = spec.metadata["help"] if switch else help_with_default(name, spec)
        # A registry's names are checked against the registry, which names the plug-ins a run may lack.
        registry = {"model": MODELS, "data": DATASETS}.get(name)
        names = {"type": str, "metavar": "{" + ",".join(registry) + "}"} if registry else {}
        _add_flag(groups[spec.metadata["group"]], name, RunConfig.types()[name], help_text, spec, **names)
    for name in dict.fromkeys(name for spec in MODELS.values() for name in spec.options.__dataclass_fields__):
        _add_flag(groups["model"], name, *_family_help(name))
    for group, declared in (("what", dataset_options()), ("augmentation", augmentation_options())):
        for name, (kind, spec) in declared.items():
            _add_flag(groups[group], name, kind, help_with_default(name, spec), spec)
    return parser


def command_line_values(parser: CommandLineParser, argv: Sequence[str] | None) -> dict[str, Any]:
    """The values the command line gives (and nothing for an option it leaves out), each of its type."""
    return parser.parse_args(argv, defaults=False).as_dict()


# How a key that only holds values for anchors begins (`.base: &base {...}`).
ANCHOR_HOLDER = "."


def config_file_values(parser: CommandLineParser, path: str) -> dict[str, Any]:
    """`--config FILE.yaml`: option names (dashes or underscores) to values, each read as the command line
    reads it; a top-level key that starts with `.` holds values for YAML's anchors. A value that nests lists
    or mappings is refused before it is read (YAML's aliases can nest a few bytes into gigabytes)."""
    try:
        raw = yaml.safe_load(Path(path).read_bytes())  # safe: no Python objects
        problem = None if raw is None or isinstance(raw, dict) else "expected a mapping of option: value"
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = "not valid YAML" + (f" at line {mark.line + 1}" if mark else "")
    if problem is not None:
        raise ConfigError(f"--config {path}: {problem}; fix the file or regenerate it with --print-config")
    if raw is None:
        return {}
    options = {action.dest for action in parser._actions} - set(COMMAND_LINE_ONLY)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if str(key).startswith(ANCHOR_HOLDER):
            continue
        if name not in options:
            close = did_you_mean(name, options)
            problem = f"unknown option {key}{close}; valid options are listed by --help {PLUGIN_HINT}"
        elif isinstance(value, dict) or (
            isinstance(value, list) and any(isinstance(item, (list, dict)) for item in value)
        ):
            problem = f"{flag(name)}: {shown_value(value)} nests lists or mappings"
        elif name == "resume" and value is not None:
            # The command line alone continues a run: a file's resume would be read by nothing.
            problem = (
                f"resume: {value} continues a run, which only the command line does; drop it from the file "
                f"and type --resume {value}" + (" --output DIR" if value == "last" else "")
            )
        else:
            try:
                values[name] = parser.parse_object({name: value}, defaults=False)[name]
            except (ConfigError, argparse.ArgumentTypeError) as error:
                problem = str(error) if str(error).startswith(flag(name)) else f"{flag(name)}: {error}"
            else:
                continue
        raise ConfigError(f"--config {path}: {problem}") from None
    return values

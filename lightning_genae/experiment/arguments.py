"""The command line's parser: every RunConfig field and every family's options as flags, with --help
generated from their declarations (help, defaults, choices), and the grid's and evaluation's own flags.

Imports no Lightning: `--help` and argument errors answer in about the time `import torch` takes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from lightning_genae import __version__
from lightning_genae.augmentation import augmentation_choices, augmentation_options
from lightning_genae.datamodules import DATASETS, dataset_options
from lightning_genae.experiment.ablation.tuning import candidate_separators, candidate_texts
from lightning_genae.experiment.config import CONFIG_FIELDS, CONFIG_TYPES, LOGGER_CHOICES, WHOLE_SPLIT, flag
from lightning_genae.experiment.program import command_prefix, program_name
from lightning_genae.experiment.resolve import DEFAULT_MAX_STEPS
from lightning_genae.models import MODELS
from lightning_genae.plugin_options import (
    OneLineErrorParser,
    command_line_reader,
    literal_choices,
    type_name,
    typed_flag,
)

__all__ = ["OneLineErrorParser", "build_parser", "split_list"]

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
    return "\n".join(lines)


def _shown_default(name: str, value: Any) -> str:
    """A default as `--help` shows it: a switch as the flag that gives it (`--no-spectral-norm`)."""
    return typed_flag(name, value) if isinstance(value, bool) else _shown(value)


def _int_list(value: str) -> list[int]:
    try:
        return [int(item) for item in split_list(value)] or [int(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer or a comma list of integers") from None


TRAIN_SIZES = "a count, `full` or a comma list of them (e.g. 1000,full)"


def parse_train_sizes(items: list[Any]) -> list[int | None]:
    """Counts of training items, `full` for the whole split (None); ValueError for anything else (a
    config file's list may hold any YAML value)."""
    sizes: list[int | None] = []
    for item in items:
        if item == WHOLE_SPLIT:
            sizes.append(None)
        elif isinstance(item, int) and not isinstance(item, bool):
            sizes.append(item)
        elif isinstance(item, str):
            sizes.append(int(item))
        else:
            raise ValueError(item)
    if not sizes:
        raise ValueError("empty")
    return sizes


def _train_size_list(value: str) -> list[int | None]:
    """`--train-size 1000,5000,full`: counts of training items, `full` for the whole split (None)."""
    items = split_list(value)
    if not items:
        raise argparse.ArgumentTypeError(f"empty; give {TRAIN_SIZES}")
    try:
        return parse_train_sizes(items)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not {TRAIN_SIZES}") from None


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class _ExtendList(argparse.Action):
    """`--logger csv,wandb` and `--logger csv --logger wandb` both work."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        items = split_list(values)
        if not items:
            # `--logger ""` from a script's empty variable: refused, as an empty path is.
            parser.error(f"argument {option_string}: empty; give one or more values separated by commas")
        current = list(getattr(namespace, self.dest, None) or [])
        setattr(namespace, self.dest, current + items)


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _owned_defaults() -> dict[str, str]:
    """Defaults that RunConfig leaves to their owner (`None` there), as `--help` shows them."""
    return {"max_steps": f"{DEFAULT_MAX_STEPS} unless --max-epochs"}


@dataclass(frozen=True)
class _FamilyOption:
    """One model option as the command line shows it: its type, help, and each family's default."""

    name: str
    kind: Any
    help: str
    choices: tuple[str, ...]
    defaults: dict[str, Any]

    @property
    def help_text(self) -> str:
        families = list(self.defaults)
        owners = "" if len(families) == len(MODELS) else "/".join(families) + ": "
        values = {_shown_default(self.name, value) for value in self.defaults.values()}
        if len(values) == 1:
            default = values.pop()
        else:
            default = ", ".join(
                f"{family} {_shown_default(self.name, value)}" for family, value in self.defaults.items()
            )
        return f"{owners}{self.help} [default: {default}]"


def _family_options() -> dict[str, _FamilyOption]:
    """Every registered family's options, merged by name (a shared option is declared once, in a base)."""
    merged: dict[str, _FamilyOption] = {}
    for family, spec in MODELS.items():
        kinds = spec.options.types()
        for option in fields(spec.options):
            known = merged.setdefault(
                option.name,
                _FamilyOption(
                    option.name,
                    kinds[option.name],
                    option.metadata["help"],
                    spec.options.choices(option.name),
                    {},
                ),
            )
            known.defaults[family] = option.default
    return merged


def _add_flag(
    group: argparse._ArgumentGroup,
    name: str,
    kind: Any,
    help_text: str,
    choices: Sequence[str] | None,
    tunable: bool = False,
) -> None:
    spelled = flag(name)
    expected = type_name(kind)
    if expected == "bool":
        group.add_argument(spelled, action=argparse.BooleanOptionalAction, help=help_text)
    elif expected == "list":
        group.add_argument(spelled, action=_ExtendList, metavar="A,B", help=help_text)
    else:
        converter = command_line_reader(kind)
        if tunable:
            converter = _each_candidate(name, converter)
            example = "A|B" if candidate_separators(name) == "|" else "X,Y"
            help_text += f"; in a grid with --tune-seeds, {example} lists candidates to tune"
        group.add_argument(spelled, type=converter, choices=choices or None, help=help_text)


def _each_candidate(name: str, converter: Callable[[str], Any]) -> Callable[[str], str]:
    """A tunable option's argparse type: each candidate it lists is checked by the option's own converter
    (so a bad value is argparse's usual one-line error), and the text is kept, since RunConfig's type
    cannot hold a list; `split_candidates` makes the values."""

    def check(text: str) -> str:
        for item in candidate_texts(name, text) or [text]:
            converter(item)
        return text

    # argparse names the converter in its message: `invalid float value: 'x'`, as for a plain option.
    check.__name__ = getattr(converter, "__name__", "value")
    return check


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=program_name(),
        description="Train autoencoder-based generative models with PyTorch Lightning.",
        epilog=_choices_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Only options the user typed appear in the namespace, so they can override a config file.
        argument_default=argparse.SUPPRESS,
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
        help="re-evaluate a saved run's checkpoint (same seeds and N) and write eval.json; "
        "takes --eval-samples, --backbone, --output and hardware options",
    )
    parser.add_argument(
        "--evaluate-folder",
        metavar="DIR",
        help=(
            "score a folder of PNG/JPG images against --data's test split with every available backbone "
            "(Inception's weights are downloaded if not cached) or the one --backbone names; writes "
            "--output/eval.json"
        ),
    )
    grid = parser.add_argument_group(
        "ablation grid (a comma list in --augment or --train-size, or --seeds, runs one run per cell)"
    )
    grid.add_argument("--seeds", metavar="0,1,2", type=_int_list, help="run every cell with each seed")
    grid.add_argument(
        "--tune-seeds",
        metavar="S[,S...]",
        type=_int_list,
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
        help="rebuild ROOT/ablation.csv, .md and .png from the finished runs of a grid",
    )
    groups = {key: parser.add_argument_group(title) for key, title in GROUP_TITLES.items()}
    registry_choices = {"model": MODELS, "data": DATASETS}
    owned_defaults = _owned_defaults()
    for name, field in CONFIG_FIELDS.items():
        group = groups[field.metadata["group"]]
        default = field.default_factory() if callable(field.default_factory) else field.default
        help_text = field.metadata["help"]
        if default is not None and name not in ("fast_dev_run", "overwrite"):
            help_text += f" [default: {_shown_default(name, default)}]"
        elif name in owned_defaults:
            help_text += f" [default: {owned_defaults[name]}]"
        if name == "train_size":
            group.add_argument(
                "--train-size",
                type=_train_size_list,
                metavar="N[,N...]",
                help=help_text + "; `full` for all of them; a list makes a grid (e.g. 1000,full)",
            )
        elif name in registry_choices:
            group.add_argument(flag(name), choices=list(registry_choices[name]), help=help_text)
        elif name in ("fast_dev_run", "overwrite"):
            group.add_argument(flag(name), action="store_true", help=help_text)
        else:
            _add_flag(group, name, CONFIG_TYPES[name], help_text, field.metadata.get("choices"))
    for option in _family_options().values():
        _add_flag(groups["model"], option.name, option.kind, option.help_text, option.choices)
    _add_plugin_flags(groups["what"], dataset_options())
    _add_plugin_flags(groups["augmentation"], augmentation_options())
    return parser


def _add_plugin_flags(group: argparse._ArgumentGroup, declared: dict[str, tuple[Any, Any]]) -> None:
    """The options the registered datasets or augmentations declare (one flag per name), as their options
    classes give them: type, help, default (or what the owner does when it is unset), choices."""
    for name, (kind, spec) in declared.items():
        help_text = spec.metadata["help"]
        shown = spec.metadata.get("shown_default")
        if shown is None and spec.default is not None:
            shown = _shown_default(name, spec.default)
        if shown is not None:
            help_text += f" [default: {shown}]"
        tunable = bool(spec.metadata.get("tunable"))
        _add_flag(group, name, kind, help_text, literal_choices(kind), tunable=tunable)

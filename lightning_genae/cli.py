"""`python run.py` / `genae`: the command line, generated from RunConfig.

Precedence: RunConfig defaults < resumed checkpoint's configuration < `--config FILE` < command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from datamodules import DATASETS
from lightning_genae import __version__
from lightning_genae.augmentation import AUGMENTATIONS
from lightning_genae.config import CONFIG_FIELDS, load_config_file, merge
from lightning_genae.errors import ConfigError, GenaeError
from lightning_genae.loggers import LOGGER_CHOICES
from lightning_genae.models import MODELS

GROUP_TITLES = {
    "what": "what to train on",
    "training": "optimisation",
    "model": "model (family-specific options say which family takes them)",
    "hardware": "hardware (passed to the Lightning Trainer)",
    "evaluation": "evaluation (FD/KID/precision/recall on validation, then on the test split at the end)",
    "logging": "logging, outputs, checkpoints",
}


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with errors as a single line (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def _choices_epilog() -> str:
    sections = [
        ("models (--model)", {name: spec.description for name, spec in MODELS.items()}),
        ("datasets (--data)", {name: cls.description for name, cls in DATASETS.items()}),
        ("augmentations (--augment, join with '+')", AUGMENTATIONS),
        ("loggers (--logger)", LOGGER_CHOICES),
    ]
    lines = []
    for title, entries in sections:
        lines.append(f"{title}:")
        width = max(len(name) for name in entries)
        lines += [f"  {name.ljust(width)}  {text}" for name, text in entries.items()]
        lines.append("")
    lines.append("example: python run.py --model gan --data digits --max-steps 200")
    return "\n".join(lines)


def _split_list(value: str) -> list[str]:
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
        current = list(getattr(namespace, self.dest, None) or [])
        setattr(namespace, self.dest, current + _split_list(values))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="run.py",
        description="Train autoencoder-based generative models with PyTorch Lightning.",
        epilog=_choices_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Only options the user typed appear in the namespace, so they can override a config file.
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="read options from YAML; the command line wins")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved configuration and exit"
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
        help="score a folder of PNG/JPG images against --data's test split; writes --output/eval.json",
    )
    groups = {key: parser.add_argument_group(title) for key, title in GROUP_TITLES.items()}
    registry_choices = {"model": MODELS, "data": DATASETS}
    for name, field in CONFIG_FIELDS.items():
        flag = "--" + name.replace("_", "-")
        group = groups[field.metadata["group"]]
        default = field.default_factory() if callable(field.default_factory) else field.default
        help_text = field.metadata["help"]
        if default is not None and not isinstance(default, bool):
            shown = ",".join(default) if isinstance(default, list) else default
            help_text += f" [default: {shown}]"
        kind = field.type.split(" ")[0]
        if name in registry_choices:
            group.add_argument(flag, choices=list(registry_choices[name]), help=help_text)
        elif kind == "bool" and name == "fast_dev_run":
            group.add_argument(flag, action="store_true", help=help_text)
        elif kind == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif kind.startswith("list"):
            group.add_argument(flag, action=_ExtendList, metavar="A,B", help=help_text)
        else:
            converter = {"int": int, "float": float}.get(kind, str)
            group.add_argument(flag, type=converter, choices=field.metadata.get("choices"), help=help_text)
    return parser


def _progress_to_stdout() -> None:
    """Lightning's information lines go to stdout, so stderr holds only problems (and one error line)."""
    for name in ("pytorch_lightning", "lightning_fabric"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sys.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 bad input, 1 training failure)."""
    _progress_to_stdout()
    # Data lives in memory and is batched by indexing, so worker processes would only add overhead.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
    # Checkpoints are meant to hold the weights after the iteration's updates.
    warnings.filterwarnings("ignore", ".*ModelCheckpoint with manual optimization and every_n_train_steps.*")
    warnings.filterwarnings("ignore", ".*val_dataloader` but have no `validation_step.*")
    args = vars(build_parser().parse_args(argv))
    config_path = args.pop("config", None)
    print_config = args.pop("print_config", False)
    checkpoint_to_evaluate = args.pop("evaluate", None)
    folder_to_evaluate = args.pop("evaluate_folder", None)
    try:
        from lightning_genae.train import ResumeState, run, validate

        if checkpoint_to_evaluate is not None or folder_to_evaluate is not None:
            from lightning_genae.evaluate import evaluate_checkpoint, evaluate_folder

            if checkpoint_to_evaluate is not None and folder_to_evaluate is not None:
                raise ConfigError("--evaluate and --evaluate-folder are separate modes; give one of them")
            if checkpoint_to_evaluate is not None:
                evaluate_checkpoint(checkpoint_to_evaluate, args)
            else:
                file_values = load_config_file(config_path) if config_path else {}
                evaluate_folder(folder_to_evaluate, {**file_values, **args})
            return 0
        base: dict[str, Any] = {}
        resume = ResumeState.load(args.get("resume"), args.get("output"))
        if resume is not None:
            base.update(resume.stored_config())
        if config_path is not None:
            base.update(load_config_file(config_path))
        config = merge(base, args)
        if print_config:
            validate(config)
            sys.stdout.write(config.to_yaml())
            return 0
        run(config, resume=resume)
    except GenaeError as error:
        message = " ".join(str(error).split("\n"))
        print(f"error: {message}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())

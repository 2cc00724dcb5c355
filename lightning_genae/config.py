"""The run configuration: every option that is not a model family's, declared once with type, default, help.

The CLI, `--config FILE.yaml`, `--print-config` and the run folder's `config.yaml` all derive from
`RunConfig`, so an option cannot exist in one of them and be missing from another. A model family's own
options (`--latent-dim`, `--beta`, ...) are declared in the family's file and travel here as
`model_options`, flat beside the others in YAML. `None` means "the default of whoever owns the option"
(the family, the augmentation, the step budget); `resolve` fills it in once. Reading a YAML file is
config_file.py's job.

Over 400 lines for one reason: RunConfig declares 55 options with their help and checks, about 250
lines of declarations that belong together (the CLI, YAML and config.yaml are generated from them).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import yaml

from lightning_genae.datamodules.placement import DATA_ON_DEVICE, check_data_on_device
from lightning_genae.errors import ConfigError
from lightning_genae.metrics.distances import MIN_FEATURE_SAMPLES
from lightning_genae.metrics.names import BACKBONES

# `--backbone none`: no feature backbone, so no image metrics for the run.
NO_BACKBONE = "none"

# Float32 weights, optionally with mixed-precision autocast. Lightning's "-true" precisions (16-true,
# bf16-true, 64-true) are left out: they cast the weights, but the image grids, the metrics and the
# augmenter call the model outside Lightning's loop with float32 data and noise, so every family failed
# with a dtype error. Mixed precision gives the speed with float32 weights.
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed")
# `--logger` names (built in loggers.py; named here so that the command line needs no logger library).
LOGGER_CHOICES = {
    "csv": "metrics.csv in the run folder (always on)",
    "tensorboard": "TensorBoard event files in <output>/tensorboard",
    "wandb": "Weights & Biases; offline (sync later) when there is no API key or no network",
}


def _opt(default: Any, help: str, **extra: Any) -> Any:
    metadata = {"help": help, **extra}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag(name: str) -> str:
    """`max_steps` -> `--max-steps`: how an option is spelled on the command line and in messages."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class RunConfig:
    """One training run. Frozen: a changed setting is a new value (`dataclasses.replace`), never a setattr."""

    # What to train on what.
    model: str = _opt("gan", "model family", group="what")
    data: str = _opt("digits", "dataset", group="what")
    augment: str = _opt("none", "data augmentation", group="what")
    data_dir: str = _opt(
        lambda: os.environ.get("GENAE_DATA_DIR", "./data"),
        "dataset root, $GENAE_DATA_DIR when that is set; for --data folder, the image folder",
        group="what",
    )
    train_size: int | None = _opt(
        None,
        "train on a stratified subset of N training images, seeded by --seed (limited data)",
        group="what",
    )
    image_size: int | None = _opt(None, "image side for --data folder", group="what")
    channels: int | None = _opt(
        None, "1 (grayscale) or 3 channels for --data folder; channels of --data sines", group="what"
    )
    seq_len: int | None = _opt(None, "time steps per series for --data sines and csv", group="what")
    stride: int | None = _opt(None, "rows between the starts of two windows for --data csv", group="what")
    csv_layout: str | None = _opt(
        None,
        "--data csv: time (rows are time steps of one recording), rows (a series per row), ucr (a series "
        "per row after its class label) or long (rows of many series, named by --series-id)",
        group="what",
        choices=("time", "rows", "ucr", "long"),
    )
    series_id: str | None = _opt(
        None, "--data csv --csv-layout long: the column that names each row's series", group="what"
    )
    fill_gaps: str | None = _opt(
        None,
        "--data csv: fill empty or NA cells by linear interpolation along time or by the last value "
        "(unset: a gap is refused)",
        group="what",
        choices=("linear", "ffill"),
    )

    # Optimisation.
    batch_size: int = _opt(64, "global batch size, split across devices", group="training")
    max_steps: int | None = _opt(
        None,
        "training iterations (a GAN's D+G update is one)",
        group="training",
    )
    max_epochs: int | None = _opt(None, "passes over the training split", group="training")
    seed: int = _opt(0, "random seed (weights, noise, --train-size subset)", group="training")

    # Augmentation; None means "the augmentation's default", and an option no chosen augmentation uses
    # is an error rather than silently ignored.
    augment_p: float | Literal["auto"] | None = _opt(
        None,
        "ae/vae online: fraction of each training batch replaced by augmented images; "
        "ae-d: probability per discriminator input; auto: ADA's controller sets it (from 0, see --ada-*)",
        group="augmentation",
    )
    augment_mode: str | None = _opt(
        None,
        "ae/vae: online (replace part of each batch on the device) or offline (a pre-generated "
        "pool concatenated with the real data)",
        group="augmentation",
        choices=("online", "offline"),
    )
    augment_pool: int | None = _opt(
        None,
        "offline mode: number of augmented images in the pool (unset: the training split's size)",
        group="augmentation",
    )
    augment_anneal: bool | None = _opt(
        None, "take --augment-p linearly to zero over training", group="augmentation"
    )
    augment_noise: float | None = _opt(
        None,
        "latent noise std, in units of each latent dimension's std over the training codes",
        group="augmentation",
    )
    augment_interp: float | None = _opt(
        None,
        "fraction of augmented images interpolated towards another image (same class when labelled) "
        "in latent space",
        group="augmentation",
    )
    augment_ckpt: str | None = _opt(
        None,
        "augmenter autoencoder checkpoint (an ae/vae run's .ckpt) instead of training and caching one",
        group="augmentation",
    )
    augmenter_steps: int | None = _opt(
        None,
        "training iterations of the augmenter autoencoder when it is trained",
        group="augmentation",
    )
    augmenter_width: int | None = _opt(
        None, "channel width of the augmenter autoencoder (hidden units of an rae)", group="augmentation"
    )
    augmenter_latent_dim: int | None = _opt(
        None, "latent dimension of the augmenter autoencoder", group="augmentation"
    )
    diffaug_policy: str | None = _opt(
        None, "diffaug: comma list of color, translation, cutout", group="augmentation"
    )
    diffaug_translation: float | None = _opt(
        None,
        "diffaug: largest shift per axis as a fraction of the image size, in [0, 0.5]",
        group="augmentation",
    )
    diffaug_cutout: float | None = _opt(
        None,
        "diffaug: side of the cut-out square as a fraction of the image size, in [0, 1]",
        group="augmentation",
    )
    ada_target: float | None = _opt(
        None,
        "ada and --augment-p auto: the r_t = E[sign(D(real))] that p is steered to (raise it: less "
        "augmentation)",
        group="augmentation",
    )
    ada_interval: int | None = _opt(
        None, "ada and --augment-p auto: discriminator steps between updates of p", group="augmentation"
    )
    ada_kimg: float | None = _opt(
        None,
        "ada and --augment-p auto: thousands of real images for p to move from 0 to 1 (ADA: 500, for "
        "runs of millions of images; the default suits runs of ~100k images)",
        group="augmentation",
    )
    ada_ops: str | None = _opt(
        None,
        "ada: comma list of pipeline operations (default: the class-preserving geometric ones with "
        "brightness and contrast on one channel, ADA's bgc on RGB)",
        group="augmentation",
    )

    # Hardware (all passed to the Lightning Trainer).
    precision: str = _opt(
        "32-true",
        "numeric precision, e.g. 32-true, 16-mixed, bf16-mixed",
        group="hardware",
        choices=PRECISIONS,
    )
    accelerator: str = _opt("auto", "cpu, gpu, mps or auto", group="hardware")
    devices: str = _opt("auto", "number of devices, a list like 0,1, or auto", group="hardware")
    strategy: str = _opt(
        "auto",
        "auto, ddp, ddp_spawn, ... (adversarial models get DDP's unused-parameter handling automatically)",
        group="hardware",
    )
    num_nodes: int = _opt(1, "number of nodes (SLURM/torchrun)", group="hardware")
    num_workers: int = _opt(
        0, "DataLoader workers (data is in memory; 0 is usually fastest)", group="hardware"
    )
    data_on_device: str = _opt(
        "auto",
        "index training batches on the run's device (no loader, no host-to-device copy): on, off, or auto "
        "(on unless --num-workers is given or the split would take over a quarter of the GPU's memory)",
        group="hardware",
        choices=DATA_ON_DEVICE,
    )

    # Logging and outputs.
    logger: list[str] = _opt(
        lambda: ["csv"], "loggers, comma list: csv (always on), tensorboard, wandb", group="logging"
    )
    wandb_project: str = _opt("lightning-genae", "W&B project", group="logging")
    wandb_group: str | None = _opt(None, "W&B group (ablation grids set it)", group="logging")
    output: str | None = _opt(
        None, "run folder (default runs/<model>-<data>-<augment>-seed<seed>-<time>)", group="logging"
    )
    eval_every: int = _opt(
        500, "validate and compute generative metrics every N iterations (and at the end)", group="evaluation"
    )
    eval_samples: int = _opt(
        10_000,
        "generated and real images per generative metric (capped by the split's size)",
        group="evaluation",
    )
    backbone: str = _opt(
        "classifier",
        "features for FD/KID/precision/recall: classifier (trained on the dataset) or inception; none "
        "skips the image metrics (and the classifier's training on first use)",
        group="evaluation",
        choices=(*BACKBONES, NO_BACKBONE),
    )
    inception_weights: str | None = _opt(
        None,
        "local torch-fidelity InceptionV3 weights (default: $TORCH_HOME/hub/checkpoints, else download)",
        group="evaluation",
    )
    classifier_weights: str | None = _opt(
        None,
        "a feature classifier checkpoint of --data to use for --backbone classifier (one the classifier "
        "command wrote, or one a run cached) instead of the shipped or cached one",
        group="evaluation",
    )
    test_split: bool = _opt(
        True,
        "evaluate on the test split at the end; a tuning grid's runs do not (they are chosen on validation "
        "alone, the test split is for the final runs)",
        group="evaluation",
    )
    image_every: int = _opt(500, "write image grids every N iterations (and at the end)", group="logging")
    ckpt_every: int = _opt(
        500, "save checkpoints/last.ckpt every N iterations (and at the end)", group="logging"
    )
    resume: str | None = _opt(
        None, "checkpoint to continue from, or 'last' = <output>/checkpoints/last.ckpt", group="logging"
    )
    fast_dev_run: bool = _opt(
        False, "one batch of each stage, to check the set-up; writes no checkpoint", group="logging"
    )
    overwrite: bool = _opt(
        False,
        "replace the run already in --output (its config.yaml, metrics.csv, checkpoints, images, summary)",
        group="logging",
    )

    # The model family's options (`latent_dim`, `beta`, ...), as given; flat beside the rest in YAML.
    model_options: Mapping[str, Any] = field(default_factory=dict, metadata={"group": "model"})

    def to_dict(self) -> dict[str, Any]:
        """Plain values, the family's options flat among the others (the format of config.yaml)."""
        values = {
            spec.name: getattr(self, spec.name) for spec in fields(self) if spec.name != "model_options"
        }
        values["logger"] = list(self.logger)
        return {**values, **dict(self.model_options)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def experiment(self) -> RunConfig:
        """The experiment without what belongs to one invocation: a re-run of it gets its own folder."""
        return dataclasses.replace(self, **{name: CONFIG_FIELDS[name].default for name in PER_INVOCATION})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """From flat plain values (config.yaml, a checkpoint, the command line); file values are coerced.

        Keys that are not RunConfig's own are the model family's options; `resolve` checks them.
        """
        own = {
            name: coerce(name, CONFIG_TYPES[name], value)
            for name, value in values.items()
            if name in CONFIG_TYPES
        }
        model_options = {name: value for name, value in values.items() if name not in CONFIG_TYPES}
        return cls(**own, model_options=model_options)


CONFIG_FIELDS = {f.name: f for f in fields(RunConfig) if f.name != "model_options"}
CONFIG_TYPES: dict[str, Any] = {
    name: kind for name, kind in typing.get_type_hints(RunConfig).items() if name in CONFIG_FIELDS
}
POSITIVE_INTS = (
    "batch_size",
    "max_steps",
    "max_epochs",
    "train_size",
    "image_size",
    "channels",
    "seq_len",
    "stride",
    "num_nodes",
    "eval_every",
    "eval_samples",
    "image_every",
    "ckpt_every",
    "augment_pool",
    "augmenter_steps",
    "augmenter_width",
    "augmenter_latent_dim",
    "ada_interval",
)
# numpy's (and so Lightning's seed_everything's) seed range: an unsigned 32-bit integer.
SEED_RANGE = (0, 2**32 - 1)
# Upper bounds of integer options. No run of 10^9 iterations, 10^6 epochs or 10^7 generated images per
# metric finishes; a value beyond them is a typo, refused before it fails far from its cause (an
# allocation, an overflow) or runs forever. Any other integer must fit in 32 bits.
UPPER_BOUNDS = {"max_steps": 10**9, "max_epochs": 10**6, "eval_samples": 10**7}
INT_LIMIT = 2**31 - 1
# Options that name a file or folder: an empty value is refused rather than read as the current folder
# or as "not given".
PATH_OPTIONS = ("output", "data_dir", "resume", "augment_ckpt", "inception_weights", "classifier_weights")


def check_path_values(values: Mapping[str, Any]) -> None:
    """Refuse a path option given as an empty (or blank) string."""
    for name in PATH_OPTIONS:
        value = values.get(name)
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{flag(name)} is empty; give a path, or drop {flag(name)} for its default")


# Options that describe one invocation, not the experiment: a re-run from config.yaml gets a new folder.
PER_INVOCATION = ("output", "resume", "fast_dev_run", "overwrite")
# Options a `--resume` may change: they take effect from the resumed step on. Every other option defines the
# run (model, data and its shapes, family options, augmentation, train size, seed, data paths, batch size,
# backbone) and must equal the checkpoint's. The family's learning rate reaches the restored optimizer.
CHANGEABLE_ON_RESUME = (
    *PER_INVOCATION,
    "max_steps",
    "max_epochs",
    "lr",
    "eval_every",
    "image_every",
    "ckpt_every",
    "eval_samples",
    "inception_weights",
    "classifier_weights",
    "test_split",
    "logger",
    "wandb_project",
    "wandb_group",
    "precision",
    "accelerator",
    "devices",
    "strategy",
    "num_nodes",
    "num_workers",
    "data_on_device",
)


def resume_conflicts(stored: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """`--data folder (checkpoint: digits)` for each option in `given` that defines the run and differs.

    Only options the checkpoint records are compared: one it lacks belongs to another family, which
    `resolve` names.
    """
    conflicts = []
    for name, value in given.items():
        if name in CHANGEABLE_ON_RESUME or name not in stored:
            continue
        wanted = coerce(name, CONFIG_TYPES[name], value) if name in CONFIG_TYPES else value
        if wanted != stored[name]:
            conflicts.append(f"{flag(name)} {_shown(wanted)} (checkpoint: {_shown(stored[name])})")
    return conflicts


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


# The value of a probability option that ADA's controller sets during training (`--augment-p auto`).
AUTO = "auto"


def accepts_auto(kind: Any) -> bool:
    """Whether an option of type `kind` (such as `float | Literal["auto"] | None`) takes `auto`."""
    return any(
        typing.get_origin(argument) is typing.Literal and AUTO in typing.get_args(argument)
        for argument in typing.get_args(kind)
    )


def float_or_auto(value: Any) -> float | str:
    """`auto` (any case) or a number: how `--augment-p` is read from the command line and from YAML."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    if isinstance(value, bool):
        raise TypeError
    return float(value)


def type_name(kind: Any) -> str:
    """`int | None` -> `int`, `Literal['a', 'b']` -> `str`: what a value of this option must be."""
    arguments = [argument for argument in typing.get_args(kind) if argument is not type(None)]
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return type_name(arguments[0])
    if origin is typing.Literal:
        return "str"
    if origin is list:
        return "list"
    return getattr(kind, "__name__", str(kind))


def coerce(name: str, kind: Any, value: Any) -> Any:
    """A value from a YAML file or a checkpoint as the option's type (argparse does this for flags)."""
    if value is None:
        return None
    expected = type_name(kind)
    try:
        if expected == "list":
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(item).strip() for item in items if str(item).strip()]
        if expected == "bool":
            if isinstance(value, bool):
                return value
            raise TypeError
        if expected == "int":
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, int):
                return value
            # Through float only for what is not an int yet (3.0 from YAML): a float rounds large ints.
            if isinstance(value, str):
                try:
                    return int(value)
                except ValueError:
                    pass
            if float(value) != int(value):
                raise TypeError
            return int(value)
        if expected == "float":
            if accepts_auto(kind):
                return float_or_auto(value)
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        return str(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(.inf) from a YAML file
        raise ConfigError(
            f"{flag(name)} {value!r} is not a valid {expected}{' or auto' if accepts_auto(kind) else ''}; "
            "fix it where it was given "
            "(the command line, the --config file or the checkpoint)"
        ) from None


def merge(file_values: Mapping[str, Any], cli_values: Mapping[str, Any]) -> RunConfig:
    """Defaults, overridden by the config file, overridden by the command line."""
    return RunConfig.from_dict({**file_values, **cli_values})


def check_values(config: RunConfig) -> None:
    """The checks of RunConfig's own options that need no registry: finiteness, ranges and choices."""
    for name in CONFIG_FIELDS:
        value = getattr(config, name)
        # NaN passes every range check (each comparison is False), so a float must be finite first.
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag(name)} must be a finite number, got {value}")
    for name in POSITIVE_INTS:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{flag(name)} must be a positive integer, got {value}")
    for name in CONFIG_FIELDS:
        value = getattr(config, name)
        bound = UPPER_BOUNDS.get(name, INT_LIMIT)
        if name != "seed" and isinstance(value, int) and not isinstance(value, bool) and value > bound:
            raise ConfigError(f"{flag(name)} must be at most {bound:,}, got {value:,}")
    check_path_values({name: getattr(config, name) for name in PATH_OPTIONS})
    for name, spec in CONFIG_FIELDS.items():
        choices = spec.metadata.get("choices")
        value = getattr(config, name)
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{flag(name)} {value!r} is not one of: {', '.join(choices)}")
    if config.num_workers < 0:
        raise ConfigError(f"--num-workers must be 0 or more, got {config.num_workers}")
    check_data_on_device(config.data_on_device, config.num_workers)
    if config.eval_samples < MIN_FEATURE_SAMPLES:
        raise ConfigError(
            f"--eval-samples must be at least {MIN_FEATURE_SAMPLES} (the k-nearest-neighbour metrics need "
            f"more than k samples), got {config.eval_samples}"
        )
    low, high = SEED_RANGE
    if not low <= config.seed <= high:
        raise ConfigError(f"--seed must lie in [{low}, {high}] (numpy's seed range), got {config.seed}")
    check_devices(config.devices)


def check_devices(devices: str) -> None:
    """`auto`, a count of at least 1, or a comma list of distinct device indices (0 or more)."""
    if devices == "auto":
        return
    items = [item.strip() for item in devices.split(",")]
    listed = "," in devices
    fix = "give auto, a count such as 2, or device indices such as 0,1"
    try:
        numbers = [int(item) for item in items if item or not listed]
    except ValueError:
        raise ConfigError(f"--devices {devices!r} is not a number or a list of numbers; {fix}") from None
    if listed:
        if any(number < 0 for number in numbers) or len(set(numbers)) != len(numbers) or not numbers:
            raise ConfigError(f"--devices {devices}: device indices must be distinct and 0 or more; {fix}")
    elif numbers[0] < 1:
        raise ConfigError(f"--devices {devices}: a device count must be at least 1; {fix}")

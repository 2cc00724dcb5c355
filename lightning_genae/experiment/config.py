"""The run configuration: what every run has, declared once with type, default, help and range; the CLI,
`--config`, `--print-config` and `config.yaml` derive from it and the plug-ins' option classes (flat beside
the others in YAML). `None` means "the default of whoever owns the option"; `resolve` fills it in once."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import yaml

from lightning_genae.datamodules import default_data_dir
from lightning_genae.datamodules.placement import DATA_ON_DEVICE
from lightning_genae.errors import ConfigError
from lightning_genae.metrics.distances import MIN_FEATURE_SAMPLES
from lightning_genae.metrics.names import BACKBONES, NO_BACKBONE
from lightning_genae.plugin_options import (
    PATH_OPTION_NAMES,
    PLUGIN_OPTION_NAMES,
    PluginOptions,
    flag,
    option,
    typed_flag,
)
from lightning_genae.run_files import PER_INVOCATION

# Float32 weights, optionally with mixed-precision autocast: the grids, metrics and augmenter call the model
# with float32 data, which weights cast by Lightning's other "-true" precisions refuse.
Precision = Literal["32-true", "32", "16-mixed", "bf16-mixed"]
Backbone = Literal[(*BACKBONES, NO_BACKBONE)]
DataOnDevice = Literal[DATA_ON_DEVICE]
# No run of 10^9 iterations, 10^6 epochs or 10^7 generated images per metric finishes: a value beyond them is
# a typo, refused before it fails far from its cause.
MAX_STEPS, MAX_EPOCHS, MAX_EVAL_SAMPLES = 10**9, 10**6, 10**7
# Training length when neither --max-steps nor --max-epochs is given, in training iterations.
DEFAULT_MAX_STEPS = 2000
# numpy's (and so Lightning's seed_everything's) seed range: an unsigned 32-bit integer.
MAX_SEED = 2**32 - 1
# `--logger` names (built in loggers.py; named here so that the command line needs no logger library).
LOGGER_CHOICES = {
    "csv": "metrics.csv in the run folder (always on)",
    "tensorboard": "TensorBoard event files in <output>/tensorboard",
    "wandb": "Weights & Biases; offline (sync later) when there is no API key or no network",
}


@dataclass(frozen=True)
class RunConfig(PluginOptions):
    """One training run, frozen; each value is checked against its declared range as it is made."""

    model: str = option("gan", "model family", group="what")
    data: str = option("digits", "dataset", group="what")
    augment: str = option("none", "data augmentation", group="what")
    data_dir: str = option(
        default_data_dir,
        "dataset root, $GENAE_DATA_DIR when that is set; for --data folder, the image folder",
        group="what",
        path=True,
    )
    train_size: int | None = option(
        None,
        "train on a stratified subset of N training images, seeded by --seed (limited data); `full` for all "
        "of them; a list makes a grid (e.g. 1000,full)",
        group="what",
        at_least=1,
    )

    batch_size: int = option(64, "global batch size, split across devices", group="training", at_least=1)
    max_steps: int | None = option(
        None,
        "training iterations (a GAN's D+G update is one)",
        group="training",
        shown_default=f"{DEFAULT_MAX_STEPS} unless --max-epochs",
        at_least=1,
        at_most=MAX_STEPS,
    )
    max_epochs: int | None = option(
        None, "passes over the training split", group="training", at_least=1, at_most=MAX_EPOCHS
    )
    seed: int = option(
        0, "random seed (weights, noise, --train-size subset)", group="training", at_least=0, at_most=MAX_SEED
    )

    precision: Precision = option(
        "32-true", "numeric precision, e.g. 32-true, 16-mixed, bf16-mixed", group="hardware"
    )
    accelerator: str = option("auto", "cpu, gpu, mps or auto", group="hardware")
    devices: str = option("auto", "number of devices, a list like 0,1, or auto", group="hardware")
    strategy: str = option(
        "auto",
        "auto, ddp, deepspeed, ... (adversarial models get DDP's unused-parameter handling automatically; "
        "strategies that spawn or fork their processes are refused)",
        group="hardware",
    )
    num_nodes: int = option(1, "number of nodes (SLURM/torchrun)", group="hardware", at_least=1)
    num_workers: int = option(
        0, "DataLoader workers (data is in memory; 0 is usually fastest)", group="hardware", at_least=0
    )
    threads: int | None = option(
        None,
        "torch's CPU threads per process (default: $OMP_NUM_THREADS where set, else the cores this process "
        "may use: SLURM's CPUs per task, else its CPU affinity); on a shared CPU give the cores you own",
        group="hardware",
        at_least=1,
    )
    data_on_device: DataOnDevice = option(
        "auto",
        "index training batches on the run's device (no loader, no host-to-device copy): on, off, or auto "
        "(on unless --num-workers is given or the split would take over a quarter of the GPU's memory)",
        group="hardware",
    )

    logger: list[str] = option(
        lambda: ["csv"], "loggers, comma list: csv (always on), tensorboard, wandb", group="logging"
    )
    wandb_project: str = option("lightning-genae", "W&B project", group="logging")
    wandb_group: str | None = option(None, "W&B group (ablation grids set it)", group="logging")
    output: str | None = option(
        None,
        "run folder (default runs/<model>-<data>-<augment>-seed<seed>-<time>)",
        group="logging",
        path=True,
    )
    eval_every: int = option(
        500,
        "validate and compute generative metrics every N iterations (and at the end)",
        group="evaluation",
        at_least=1,
    )
    # The k-nearest-neighbour metrics need more than k samples.
    eval_samples: int = option(
        10_000,
        "generated and real images per generative metric (capped by the split's size)",
        group="evaluation",
        at_least=MIN_FEATURE_SAMPLES,
        at_most=MAX_EVAL_SAMPLES,
    )
    backbone: Backbone = option(
        "classifier",
        "features for FD/KID/precision/recall: classifier (trained on the dataset) or inception; none "
        "skips the image metrics (and the classifier's training on first use)",
        group="evaluation",
    )
    inception_weights: str | None = option(
        None,
        "local torch-fidelity InceptionV3 weights (default: $TORCH_HOME/hub/checkpoints, else download)",
        group="evaluation",
        path=True,
    )
    classifier_weights: str | None = option(
        None,
        "a feature classifier checkpoint of --data to use for --backbone classifier (one the classifier "
        "command wrote, or one a run cached) instead of the shipped or cached one",
        group="evaluation",
        path=True,
    )
    test_split: bool = option(
        True,
        "evaluate on the test split at the end; a tuning grid's runs do not (they are chosen on validation "
        "alone, the test split is for the final runs)",
        group="evaluation",
    )
    image_every: int = option(
        500, "write image grids every N iterations (and at the end)", group="logging", at_least=1
    )
    ckpt_every: int = option(
        500, "save checkpoints/last.ckpt every N iterations (and at the end)", group="logging", at_least=1
    )
    resume: str | None = option(
        None,
        "checkpoint to continue from, or 'last' = <output>/checkpoints/last.ckpt",
        group="logging",
        path=True,
    )
    fast_dev_run: bool = option(
        False, "one batch of each stage, to check the set-up; writes no checkpoint", group="logging"
    )
    overwrite: bool = option(
        False,
        "replace the run already in --output (its config.yaml, metrics.csv, checkpoints, images, summary); "
        "with --evaluate or --evaluate-folder, an earlier eval.json there",
        group="logging",
    )

    # The plug-ins' options (`latent_dim`, `augment_p`, ...), as given; `resolve` hands each to its owner.
    plugin_options: Mapping[str, Any] = field(default_factory=dict, metadata={"group": "model"})

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_devices(self.devices)
        # Trained in processes the strategy starts, the run's own process would record 0 iterations and lose
        # the training's rows and checkpoints.
        if any(launcher in self.strategy for launcher in ("spawn", "fork", "notebook")):
            raise ConfigError(f"--strategy {self.strategy} trains in processes it starts; use --strategy ddp")

    def to_dict(self) -> dict[str, Any]:
        """Plain values, the plug-ins' options flat among the others (the format of config.yaml)."""
        values = {
            spec.name: getattr(self, spec.name) for spec in fields(self) if spec.name != "plugin_options"
        }
        values["logger"] = list(self.logger)
        return {**values, **dict(self.plugin_options)}

    def given_plugin_options(self, names: Collection[str]) -> dict[str, Any]:
        """The plug-in options among `names` that were set (None means "left to its owner's default")."""
        return {
            name: value for name, value in self.plugin_options.items() if name in names and value is not None
        }

    def to_yaml(self) -> str:
        """config.yaml's text less unread plug-in options: a run without their plug-in refuses them."""
        values = self.to_dict()
        unset = [
            name
            for name, value in self.plugin_options.items()
            if value is None and name in PLUGIN_OPTION_NAMES
        ]
        return yaml.safe_dump({k: v for k, v in values.items() if k not in unset}, sort_keys=False)

    def experiment(self) -> RunConfig:
        """The experiment without what belongs to one invocation: a re-run of it gets its own folder."""
        return dataclasses.replace(self, **{name: CONFIG_FIELDS[name].default for name in PER_INVOCATION})

    def with_absolute_paths(self) -> RunConfig:
        """The options with every path absolute (`~` expanded), naming the same folders from any folder."""
        values = self.to_dict()
        for name in PATH_OPTION_NAMES & set(values):
            if isinstance(values[name], str) and (name, values[name]) != ("resume", "last"):
                values[name] = absolute_path(values[name])
        return RunConfig.from_dict(values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """From flat typed values (config.yaml, a checkpoint, the command line)."""
        own = {name: value for name, value in values.items() if name in CONFIG_FIELDS}
        return cls(**own, plugin_options={name: v for name, v in values.items() if name not in CONFIG_FIELDS})


CONFIG_FIELDS = {f.name: f for f in fields(RunConfig) if f.name != "plugin_options"}


def absolute_path(path: str) -> str:
    """`path` as the data and weights loaders read it (`~` expanded), absolute from the current folder."""
    return os.path.abspath(os.path.expanduser(path))


# run.py's modes (a grid's options among them), and with help, its flags that are no option of a run.
GRID_MODES = ("seeds", "grid_index", "tune_seeds")
MODES = ("config", "evaluate", "evaluate_folder", "summarize", *GRID_MODES)
COMMAND_LINE_ONLY = (*MODES, "help", "print_config", "version")
# How --train-size names the whole training split (None in RunConfig).
WHOLE_SPLIT = "full"
# Options a `--resume` may change, from the resumed step on; every other option defines the run and must equal
# the checkpoint's. `--data-dir` may move: the data is compared by content (`RunCheckpoint.check_trained_on`).
CHANGEABLE_ON_RESUME = (
    *PER_INVOCATION,
    "data_dir",
    "max_steps",
    "max_epochs",
    "lr",
    "eval_every",
    "image_every",
    "ckpt_every",
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


def resume_conflicts(
    stored: Mapping[str, Any],
    given: Mapping[str, Any],
    changeable: Collection[str] = (),
    stored_in: str = "checkpoint",
) -> list[str]:
    """`--data folder (checkpoint: digits)` per run-defining option where `given` differs from `stored`."""
    conflicts = []
    for name, wanted in given.items():
        if name in CHANGEABLE_ON_RESUME or name in changeable or name not in stored:
            continue
        if comparable(name, wanted) != comparable(name, stored[name]):
            if isinstance(wanted, bool):
                # A switch reads as typed: `--no-spectral-norm (checkpoint: --spectral-norm)`.
                was = typed_flag(name, stored[name])
                conflicts.append(f"{typed_flag(name, wanted)} ({stored_in}: {was})")
            else:
                conflicts.append(f"{flag(name)} {_shown(wanted)} ({stored_in}: {_shown(stored[name])})")
    return conflicts


def comparable(name: str, value: Any) -> Any:
    """An option's value as runs compare it: `--precision 32` is `32-true`, a path is its absolute form."""
    if name == "precision" and value == "32":
        return "32-true"
    if name in PATH_OPTION_NAMES and isinstance(value, str) and value:
        return absolute_path(value)
    return value


def _shown(value: Any) -> str:
    if value is None:
        # An option the run left unset (an augmentation's, in a run without it).
        return "unset"
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def parse_devices(devices: str) -> int | str | list[int]:
    """`auto`, a count of at least 1, or a comma list of distinct device indices, as the Trainer takes."""
    if devices.strip() == "auto":
        return "auto"
    listed = "," in devices
    items = [item.strip() for item in devices.split(",") if item.strip() or not listed]
    numbers = [int(item) for item in items if item.lstrip("-").isdigit()]
    distinct = len(set(numbers)) == len(numbers) == len(items) > 0
    if not distinct or min(numbers) < (0 if listed else 1):
        raise ConfigError(f"--devices {devices} is not auto, a count above 0 or distinct device indices")
    return numbers if listed else numbers[0]


def device_count(devices: str) -> int | None:
    """How many devices `--devices` names (None for auto, which the machine decides)."""
    parsed = parse_devices(devices)
    if isinstance(parsed, str):
        return None
    return len(parsed) if isinstance(parsed, list) else parsed

"""The run configuration: every option is declared once here, with its type, default and help.

The CLI, `--config FILE.yaml`, `--print-config` and the run folder's `config.yaml` all derive from
`RunConfig`, so an option cannot exist in one of them and be missing from another.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lightning_genae.errors import ConfigError
from lightning_genae.metrics.names import BACKBONES

PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    metadata = {"help": help, **extra}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RunConfig:
    """One training run. `None` for a model option means "the model family's default"."""

    # What to train on what.
    model: str = _opt("gan", "model family", group="what")
    data: str = _opt("digits", "dataset", group="what")
    augment: str = _opt("none", "data augmentation", group="what")
    data_dir: str = _opt(
        lambda: os.environ.get("GENAE_DATA_DIR", "./data"),
        "dataset root (default $GENAE_DATA_DIR, else ./data); for --data folder, the image folder",
        group="what",
    )
    train_size: int | None = _opt(
        None,
        "train on a stratified subset of N training images, seeded by --seed (limited data)",
        group="what",
    )
    image_size: int | None = _opt(None, "image side for --data folder (default 64)", group="what")
    channels: int | None = _opt(
        None, "1 (grayscale) or 3 channels for --data folder (default 3)", group="what"
    )

    # Optimisation.
    batch_size: int = _opt(64, "global batch size, split across devices", group="training")
    max_steps: int | None = _opt(
        None,
        "training iterations (a GAN's D+G update is one); default 2000 unless --max-epochs",
        group="training",
    )
    max_epochs: int | None = _opt(None, "passes over the training split", group="training")
    lr: float | None = _opt(None, "learning rate (default: 1e-3 for ae/vae, 5e-4 for gan)", group="training")
    seed: int = _opt(0, "random seed (weights, noise, --train-size subset)", group="training")

    # Shared network shape.
    latent_dim: int | None = _opt(None, "latent / noise dimension (default 32)", group="model")
    width: int | None = _opt(None, "channel width of the first conv layer (default 64)", group="model")
    # Family-specific options; MODELS lists which family takes which.
    recon_loss: str | None = _opt(
        None,
        "reconstruction loss: mse or bce (default: mse for ae, bce for vae)",
        group="model",
        choices=("mse", "bce"),
    )
    denoise: float | None = _opt(
        None, "ae: std of Gaussian input noise; > 0 makes a denoising AE", group="model"
    )
    beta: float | None = _opt(None, "vae: weight of the KL term (default 1)", group="model")
    kl_warmup: int | None = _opt(
        None, "vae: steps over which the KL weight rises from 0 to beta", group="model"
    )
    gan_loss: str | None = _opt(
        None, "gan: ns (non-saturating, default) or hinge", group="model", choices=("ns", "hinge")
    )
    ema: float | None = _opt(
        None, "gan: decay of an EMA generator used for sampling (0 = off)", group="model"
    )
    spectral_norm: bool | None = _opt(None, "gan: spectral normalisation in the discriminator", group="model")

    # Augmentation; None means "the augmentation's default", and an option no chosen augmentation uses
    # is an error rather than silently ignored.
    augment_p: float | None = _opt(
        None,
        "ae/vae online: fraction of each training batch replaced by augmented images; "
        "ae-d: probability per discriminator input (default 0.25)",
        group="augmentation",
    )
    augment_mode: str | None = _opt(
        None,
        "ae/vae: online (replace part of each batch on the device, default) or offline (a pre-generated "
        "pool concatenated with the real data)",
        group="augmentation",
        choices=("online", "offline"),
    )
    augment_pool: int | None = _opt(
        None,
        "offline mode: number of augmented images in the pool (default: the training split's size)",
        group="augmentation",
    )
    augment_anneal: bool | None = _opt(
        None, "take --augment-p linearly to zero over training", group="augmentation"
    )
    augment_noise: float | None = _opt(
        None,
        "latent noise std, in units of each latent dimension's std over the training codes (default 0.5)",
        group="augmentation",
    )
    augment_interp: float | None = _opt(
        None,
        "fraction of augmented images interpolated towards another image (same class when labelled) "
        "in latent space (default 0.5)",
        group="augmentation",
    )
    augment_ckpt: str | None = _opt(
        None,
        "augmenter autoencoder checkpoint (an ae/vae run's .ckpt) instead of training and caching one",
        group="augmentation",
    )
    augmenter_steps: int | None = _opt(
        None,
        "training iterations of the augmenter autoencoder when it is trained (default 1000)",
        group="augmentation",
    )
    augmenter_width: int | None = _opt(
        None, "channel width of the augmenter autoencoder (default 64)", group="augmentation"
    )
    augmenter_latent_dim: int | None = _opt(
        None, "latent dimension of the augmenter autoencoder (default 32)", group="augmentation"
    )
    diffaug_policy: str | None = _opt(
        None, "diffaug: comma list of color, translation, cutout (default all three)", group="augmentation"
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
        "features for FD/KID/precision/recall: classifier (trained on the dataset) or inception",
        group="evaluation",
        choices=BACKBONES,
    )
    inception_weights: str | None = _opt(
        None,
        "local torch-fidelity InceptionV3 weights (default: $TORCH_HOME/hub/checkpoints, else download)",
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


CONFIG_FIELDS = {f.name: f for f in fields(RunConfig)}
POSITIVE_INTS = (
    "batch_size",
    "max_steps",
    "max_epochs",
    "latent_dim",
    "width",
    "train_size",
    "image_size",
    "num_nodes",
    "eval_every",
    "eval_samples",
    "image_every",
    "ckpt_every",
    "augment_pool",
    "augmenter_steps",
    "augmenter_width",
    "augmenter_latent_dim",
)
# Options that describe one invocation, not the experiment: a re-run from config.yaml gets a new folder.
PER_INVOCATION = ("output", "resume", "fast_dev_run")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config; keys are option names (dashes or underscores)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"--config {path}: no such file; give the path of a YAML file (e.g. a run's config.yaml)"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"--config {path}: not valid YAML{where}; fix the file or regenerate it with --print-config"
        ) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"--config {path}: expected a mapping of option: value; see --print-config for the format"
        )
    values = {str(key).replace("-", "_"): value for key, value in raw.items()}
    unknown = sorted(set(values) - set(CONFIG_FIELDS))
    if unknown:
        raise ConfigError(
            f"--config {path}: unknown option(s) {', '.join(unknown)}; valid options are listed by --help"
        )
    return values


def coerce(name: str, value: Any) -> Any:
    """Check a config-file value against the option's type (the CLI's argparse does this for flags)."""
    if value is None:
        return None
    annotation = CONFIG_FIELDS[name].type
    try:
        if annotation.startswith("list"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(item).strip() for item in items if str(item).strip()]
        if annotation.startswith("bool"):
            if isinstance(value, bool):
                return value
            raise TypeError
        if annotation.startswith("int"):
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            return int(value)
        if annotation.startswith("float"):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        kind = annotation.split(" ")[0]
        raise ConfigError(
            f"option {name}: {value!r} is not a valid {kind}; fix it in the config file"
        ) from None


def merge(file_values: dict[str, Any], cli_values: dict[str, Any]) -> RunConfig:
    """Defaults, overridden by the config file, overridden by the command line."""
    values = {name: coerce(name, value) for name, value in file_values.items()}
    values.update(cli_values)
    return RunConfig(**values)


def validate_values(config: RunConfig) -> None:
    """Checks that need no registry: ranges and choices."""
    for name in POSITIVE_INTS:
        value = getattr(config, name)
        if value is not None and value <= 0:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be a positive integer, got {value}")
    if config.lr is not None and not config.lr > 0:
        raise ConfigError(
            f"--lr must be positive, got {config.lr}; try 5e-4 for a GAN or 1e-3 for an autoencoder"
        )
    for name, f in CONFIG_FIELDS.items():
        choices = f.metadata.get("choices")
        value = getattr(config, name)
        if choices and value is not None and value not in choices:
            raise ConfigError(f"--{name.replace('_', '-')} {value!r} is not one of: {', '.join(choices)}")
    for name in ("denoise", "beta", "kl_warmup", "ema"):
        value = getattr(config, name)
        if value is not None and value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative, got {value}")
    if config.num_workers < 0:
        raise ConfigError(f"--num-workers must be 0 or more, got {config.num_workers}")
    if config.channels is not None and config.channels not in (1, 3):
        raise ConfigError(f"--channels must be 1 or 3, got {config.channels}")


def resolve_model_options(
    config: RunConfig, model_name: str, module: type, options: tuple[str, ...], all_model_options: set[str]
) -> dict[str, Any]:
    """Keyword arguments for the model, its own defaults filled in; rejects options of other families."""
    foreign = sorted(name for name in all_model_options - set(options) if getattr(config, name) is not None)
    if foreign:
        flags = ", ".join("--" + name.replace("_", "-") for name in foreign)
        raise ConfigError(
            f"{flags} do(es) not apply to --model {model_name}; drop it or pick a model that takes it"
        )
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(module.__init__).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    kwargs = {}
    for name in options:
        value = getattr(config, name)
        kwargs[name] = defaults[name] if value is None else value
        setattr(config, name, kwargs[name])  # config.yaml records the value actually used
    return kwargs

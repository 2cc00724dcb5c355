"""One training run from a validated RunConfig: data, model, Trainer, run folder, summary."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, replace
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_warn

from callbacks import AugmentationPreview, InterpolationGrid, ReconstructionGrid, SampleGrid
from callbacks.metrics import GenerativeMetrics, RepresentationMetrics, headline_metric
from datamodules import DATASETS, ImageDataModule, build_datamodule
from datamodules.augmented import AugmentedDataModule
from lightning_genae.augmentation import DEFAULTS as AUGMENT_DEFAULTS
from lightning_genae.augmentation import AugmentPlan, parse_augment, resolve_augment_plan
from lightning_genae.augmentation.discriminator import DiscriminatorAugmentation
from lightning_genae.augmentation.latent import LatentAugmenter, load_augmenter, reconstruction_mse
from lightning_genae.config import PER_INVOCATION, RunConfig, resolve_model_options, validate_values
from lightning_genae.console import IterationProgressBar, describe_model, describe_training, say
from lightning_genae.errors import ConfigError, describe_error
from lightning_genae.loggers import LOGGER_CHOICES, build_loggers, finish_loggers
from lightning_genae.metrics.backbones import BackboneUnavailable, load_backbone
from lightning_genae.models import MODELS, GenerativeModule, Sampler

DEFAULT_MAX_STEPS = 2000
CHECKPOINT_CONFIG_KEY = "genae_config"
VERSIONED_PACKAGES = (
    "torch",
    "torchvision",
    "pytorch-lightning",
    "torchmetrics",
    "wandb",
    "numpy",
    "lightning-genae",
)


@dataclass(frozen=True)
class ResumeState:
    """The checkpoint `--resume` names, read once: its path, contents and training position."""

    path: Path
    checkpoint: dict[str, Any]

    @classmethod
    def load(cls, resume: str | None, output: str | None, flag: str = "--resume") -> ResumeState | None:
        if resume is None:
            return None
        if resume == "last":
            if output is None:
                raise ConfigError("--resume last needs --output RUN_DIR, the run folder to continue")
            path = Path(output) / "checkpoints" / "last.ckpt"
        else:
            path = Path(resume)
        if not path.is_file():
            raise ConfigError(
                f"{flag}: checkpoint {path} does not exist; pass an existing .ckpt file"
                + (
                    ", or --resume last with --output set to a run folder with checkpoints/last.ckpt"
                    if flag == "--resume"
                    else ""
                )
            )
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # noqa: BLE001 - any unpickling failure means the same to the user
            raise ConfigError(
                f"{flag}: {path} is not a readable checkpoint ({type(error).__name__}); pick another .ckpt"
            ) from None
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise ConfigError(f"{flag}: {path} is not a Lightning checkpoint; pick a .ckpt written by a run")
        return cls(path, checkpoint)

    def stored_config(self) -> dict[str, Any]:
        """The run configuration saved in the checkpoint, minus what belongs to one invocation."""
        stored = dict(self.checkpoint.get(CHECKPOINT_CONFIG_KEY) or {})
        for key in PER_INVOCATION:
            stored.pop(key, None)
        return stored

    def iteration(self, steps_per_iteration: int) -> int:
        return self.checkpoint["global_step"] // steps_per_iteration


def run_folder_of(checkpoint_path: Path) -> Path:
    """`<run>/checkpoints/x.ckpt` -> `<run>`; a checkpoint elsewhere -> its folder."""
    parent = checkpoint_path.parent
    return parent.parent if parent.name == "checkpoints" else parent


def default_run_dir(config: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.model}-{config.data}-{config.augment}-seed{config.seed}-{stamp}"


def validate(config: RunConfig) -> dict[str, Any]:
    """Check every option against the registries; return the model's keyword arguments."""
    validate_values(config)
    if config.model not in MODELS:
        raise ConfigError(f"--model {config.model!r} is unknown; choose from {', '.join(MODELS)}")
    if config.data not in DATASETS:
        raise ConfigError(f"--data {config.data!r} is unknown; choose from {', '.join(DATASETS)}")
    parse_augment(config.augment)
    unknown_loggers = [name for name in config.logger if name not in LOGGER_CHOICES]
    if unknown_loggers:
        raise ConfigError(
            f"--logger {', '.join(unknown_loggers)} is unknown; choose from {', '.join(LOGGER_CHOICES)}"
        )
    if config.max_steps is None and config.max_epochs is None:
        config.max_steps = DEFAULT_MAX_STEPS
    spec = MODELS[config.model]
    all_model_options = {name for other in MODELS.values() for name in other.options}
    model_kwargs = resolve_model_options(config, config.model, spec.module, spec.options, all_model_options)
    resolve_augment_plan(config, spec.module.adversarial)
    return model_kwargs


def parse_devices(devices: str) -> int | str | list[int]:
    """`auto`, `4`, `-1` or `0,1` as the Trainer wants them."""
    text = devices.strip()
    if text == "auto":
        return text
    try:
        if "," in text:
            return [int(item) for item in text.split(",") if item.strip()]
        return int(text)
    except ValueError:
        raise ConfigError(
            f"--devices {devices!r}: use a count (2), a list of indices (0,1) or auto"
        ) from None


def build_strategy(config: RunConfig, model: GenerativeModule) -> Any:
    """Adversarial models leave one network without gradients in each backward; DDP must expect that."""
    if model.adversarial and config.strategy.startswith("ddp") and "find_unused" not in config.strategy:
        start_method = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}.get(
            config.strategy
        )
        if start_method is not None:
            return DDPStrategy(find_unused_parameters=True, start_method=start_method)
    return config.strategy


class StoreRunConfig(Callback):
    """Puts the run configuration into every checkpoint, so a checkpoint alone can be resumed or evaluated."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[CHECKPOINT_CONFIG_KEY] = self.config.to_dict()


class SeedPerRank(Callback):
    """Give every DDP process its own random stream once training starts.

    seed_everything seeds all processes alike, so each would draw the same GAN noise, augmentation
    choices and DiffAugment parameters every step: the world's batch of fakes would be one batch
    repeated. Weights stay identical across processes (DDP broadcasts rank 0's at start).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            pl.seed_everything(self.seed + 7919 * trainer.global_rank, workers=True, verbose=False)


def build_callbacks(config: RunConfig, model: GenerativeModule, run_dir: Path) -> list[Callback]:
    steps_per_iteration = model.optimizer_steps_per_iteration
    checkpoint_dir = run_dir / "checkpoints"
    callbacks: list[Callback] = [
        SampleGrid(every_n_steps=config.image_every, seed=config.seed + 1234),
        ReconstructionGrid(every_n_steps=config.image_every),
        InterpolationGrid(every_n_steps=config.image_every, seed=config.seed + 4321),
        RepresentationMetrics(seed=config.seed),
        SeedPerRank(config.seed),
    ]
    if config.augment != "none":
        callbacks.append(AugmentationPreview(seed=config.seed))
    if config.fast_dev_run:
        # A set-up check: its weights are worthless and must not look like a run to resume.
        return callbacks
    callbacks += [
        StoreRunConfig(config),
        ModelCheckpoint(
            dirpath=checkpoint_dir,
            every_n_train_steps=config.ckpt_every * steps_per_iteration,
            save_top_k=0,
            save_last=True,
        ),
    ]
    return callbacks


def best_checkpoint(model: GenerativeModule, run_dir: Path) -> ModelCheckpoint:
    """Keeps the checkpoint with the best value of the family's headline validation metric."""
    return ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=model.monitor,
        mode=model.monitor_mode,
        save_top_k=1,
        auto_insert_metric_name=False,
    )


def generative_metrics(
    config: RunConfig, model: GenerativeModule, datamodule: ImageDataModule
) -> GenerativeMetrics | None:
    """The metric callback for models that sample; None, with one warning, when no backbone is available."""
    if not isinstance(model, Sampler):
        return None
    try:
        backbone = load_backbone(
            config.backbone,
            config.data,
            # A classifier trained on first use learns from the real data, never an augmented wrapper's.
            getattr(datamodule, "base", datamodule),
            inception_weights=config.inception_weights,
        )
    except BackboneUnavailable as error:
        rank_zero_warn(f"generative metrics skipped: {error}")
        return None
    return GenerativeMetrics(backbone, num_samples=config.eval_samples, seed=config.seed)


def hardware_arguments(config: RunConfig, model: GenerativeModule) -> dict[str, Any]:
    """The Trainer arguments that say where and how numerically a model runs."""
    return {
        "precision": config.precision,
        "accelerator": config.accelerator,
        "devices": parse_devices(config.devices),
        "strategy": build_strategy(config, model),
        "num_nodes": config.num_nodes,
    }


def build_trainer(
    config: RunConfig, model: GenerativeModule, run_dir: Path, loggers: list, callbacks: list[Callback]
) -> pl.Trainer:
    steps_per_iteration = model.optimizer_steps_per_iteration
    try:
        return pl.Trainer(
            default_root_dir=str(run_dir),
            # Lightning counts optimizer steps; --max-steps counts training iterations.
            max_steps=config.max_steps * steps_per_iteration if config.max_steps else -1,
            max_epochs=config.max_epochs if config.max_epochs else (None if config.max_steps else -1),
            **hardware_arguments(config, model),
            logger=loggers,
            callbacks=[*callbacks, IterationProgressBar()],
            # The console prints one line about the model instead of Lightning's table.
            enable_model_summary=False,
            log_every_n_steps=min(10, config.eval_every),
            # Validation by iteration count across epoch boundaries, so tiny and huge datasets behave alike.
            val_check_interval=config.eval_every,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
            fast_dev_run=config.fast_dev_run,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as error:
        raise ConfigError(
            f"Trainer set-up failed: {describe_error(error)}; "
            "check --accelerator/--devices/--strategy/--precision"
        ) from None


def environment_info(trainer: pl.Trainer) -> dict[str, Any]:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "device": f"{trainer.num_devices} x {device.type} ({name})",
        "num_nodes": trainer.num_nodes,
        "world_size": trainer.world_size,
        "versions": versions,
    }


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Scalar metrics as floats; "step" is the x-axis override, not a metric."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if key != "step" and torch.as_tensor(value).numel() == 1
    }


def log_last_training_values(
    trainer: pl.Trainer, model: GenerativeModule, fit_metrics: dict[str, float]
) -> None:
    """Record the final batch's training metrics when Lightning's every-N-steps cadence skipped them."""
    last_batch = model.iteration - 1
    training_values = {key: value for key, value in fit_metrics.items() if key.startswith("train/")}
    if not training_values or last_batch < 0 or model.iteration % trainer.log_every_n_steps == 0:
        return
    for logger in trainer.loggers:
        logger.log_metrics(training_values, step=last_batch)
        logger.save()


def format_metrics_table(metrics: dict[str, float]) -> str:
    if not metrics:
        return "(no metrics)"
    width = max(len(key) for key in metrics)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  ----------"]
    lines += [f"{key.ljust(width)}  {value:.6g}" for key, value in sorted(metrics.items())]
    return "\n".join(lines)


def datamodule_for(config: RunConfig) -> ImageDataModule:
    """The run's DataModule; `--evaluate` rebuilds the same one from a checkpoint's configuration."""
    return build_datamodule(
        config.data,
        data_dir=config.data_dir,
        batch_size=config.batch_size,
        train_size=config.train_size,
        seed=config.seed,
        num_workers=config.num_workers,
        image_size=config.image_size,
        channels=config.channels,
    )


def final_evaluation(
    trainer: pl.Trainer, model: GenerativeModule, datamodule: ImageDataModule, seed: int
) -> dict[str, float]:
    """Validation and test metrics of the model as it is; seeded, so `--evaluate` reproduces them."""
    pl.seed_everything(seed, workers=True, verbose=False)
    metrics: dict[str, float] = {}
    for results in (
        trainer.validate(model, datamodule=datamodule, verbose=False),
        trainer.test(model, datamodule=datamodule, verbose=False),
    ):
        for result in results:
            metrics.update(_floats(result))
    return metrics


def attach_augmentation(
    config: RunConfig,
    plan: AugmentPlan,
    datamodule: ImageDataModule,
    model: GenerativeModule,
    trainer: pl.Trainer,
) -> tuple[ImageDataModule | AugmentedDataModule, dict[str, Any]]:
    """Wrap the data (ae/vae) and/or give the model its discriminator augmentation (diffaug/ae-d).

    Returns the DataModule to train on and the record summary.json keeps of the augmentation.
    """
    if not plan.names:
        return datamodule, {}
    record: dict[str, Any] = {
        "augment": "+".join(plan.names),
        **{key: getattr(config, key) for key in AUGMENT_DEFAULTS if getattr(config, key) is not None},
    }
    augmenter = None
    if plan.needs_augmenter:
        if config.fast_dev_run:
            # A set-up check: a one-step augmenter (cached under its own key) exercises the same path.
            plan = replace(plan, augmenter_steps=1)
        module, origin = load_augmenter(plan, datamodule, config.seed, accelerator=config.accelerator)
        augmenter = LatentAugmenter(module, noise=plan.noise, interp=plan.interp)
        augmenter.to(trainer.strategy.root_device).fit(*datamodule.split_tensors("train"))
        # How faithful the augmenter is, so a bad one is visible next to the ablation's numbers.
        origin["val_recon_mse"] = reconstruction_mse(augmenter, datamodule.split_tensors("val")[0][:2000])
        record["augmenter"] = origin
        say(
            f"augmenter: {origin['family']}, {origin['source']} ({origin['path']}); "
            f"validation reconstruction MSE {origin['val_recon_mse']:.4f}"
        )
    if plan.discriminator_side:
        model.d_augment = DiscriminatorAugmentation(
            augmenter if "ae-d" in plan.names else None,
            p=plan.p,
            diffaug_policy=plan.diffaug_policy if "diffaug" in plan.names else None,
        )
    if plan.data_side:
        assert augmenter is not None
        if config.max_steps:
            total = config.max_steps
        else:
            total = config.max_epochs * (len(datamodule.split_tensors("train")[0]) // config.batch_size)
        datamodule = AugmentedDataModule(
            datamodule, plan, augmenter, seed=config.seed, total_iterations=total
        )
    return datamodule, record


def prepare_data_early(datamodule: ImageDataModule, trainer: pl.Trainer) -> None:
    """Surface missing or bad data before a run folder or logger is created (local rank 0 only)."""
    if trainer.local_rank != 0:
        return
    datamodule.trainer = trainer
    datamodule.prepare_data()
    datamodule.setup("fit")


def run(config: RunConfig, resume: ResumeState | None = None) -> dict[str, Any]:
    """Train (or resume) one run and write its folder; returns the summary written to summary.json."""
    started = time.time()
    model_kwargs = validate(config)
    spec = MODELS[config.model]
    if resume is None:
        resume = ResumeState.load(config.resume, config.output)
    resume_step = None
    if resume is not None:
        trained_model = resume.stored_config().get("model", config.model)
        if trained_model != config.model:
            raise ConfigError(
                f"--resume: {resume.path} was trained with --model {trained_model}, not {config.model}; "
                "drop --model or resume a checkpoint of that model"
            )
        resume_step = resume.iteration(spec.module.optimizer_steps_per_iteration)
    run_dir = (
        Path(config.output)
        if config.output
        else (run_folder_of(resume.path) if resume else default_run_dir(config))
    )
    config.output = str(run_dir)

    pl.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = datamodule_for(config)
    model = spec.module(image_shape=datamodule.image_shape, **model_kwargs)
    loggers = build_loggers(
        config.logger,
        run_dir,
        run_name=run_dir.name,
        wandb_project=config.wandb_project,
        wandb_group=config.wandb_group,
        resume_step=resume_step,
    )
    trainer = build_trainer(config, model, run_dir, loggers, build_callbacks(config, model, run_dir))
    prepare_data_early(datamodule, trainer)
    plan = resolve_augment_plan(config, spec.module.adversarial)
    datamodule, augmentation_record = attach_augmentation(config, plan, datamodule, model, trainer)
    metrics_callback = generative_metrics(config, model, datamodule)
    if metrics_callback is not None:
        trainer.callbacks.append(metrics_callback)
        if model.monitor is None:
            model.monitor = headline_metric(metrics_callback.backbone.name)
    if model.monitor is not None and not config.fast_dev_run:
        trainer.callbacks.append(best_checkpoint(model, run_dir))

    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved = config.to_dict()
        for key in PER_INVOCATION:
            saved[key] = None
        header = f"# lightning-genae run; re-run with: python run.py --config {run_dir}/config.yaml\n"
        (run_dir / "config.yaml").write_text(header + RunConfig(**saved).to_yaml())
        say(f"run folder: {run_dir}  ({datamodule.summary()})")
        say(describe_model(config.model, model, trainer))
        if resume is not None:
            say(f"resuming from {resume.path} at iteration {resume_step}")
    for logger in loggers[1:]:
        logger.log_hyperparams(config.to_dict())

    fit_started = time.time()
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume.path) if resume else None)
    say(describe_training(resume_step or 0, model.iteration, time.time() - fit_started))
    fit_metrics = _floats(trainer.callback_metrics)
    log_last_training_values(trainer, model, fit_metrics)
    if not config.fast_dev_run:
        trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)

    final_metrics = {**fit_metrics, **final_evaluation(trainer, model, datamodule, config.seed)}

    summary = {
        "model": config.model,
        "data": config.data,
        "augment": config.augment,
        "seed": config.seed,
        "global_step": model.iteration,
        "max_steps": config.max_steps,
        "wall_time_s": round(time.time() - started, 2),
        "final_metrics": final_metrics,
        "headline_metric": model.monitor,
        "evaluation": metrics_callback.records if metrics_callback is not None else {},
        "augmentation": augmentation_record,
        "data_summary": datamodule.summary(),
        "checkpoints": sorted(str(path) for path in (run_dir / "checkpoints").glob("*.ckpt")),
        **environment_info(trainer),
        "config": config.to_dict(),
    }
    if trainer.is_global_zero:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        say(f"\nfinal metrics (step {summary['global_step']}):\n{format_metrics_table(final_metrics)}")
        say(f"run folder: {run_dir}")
    finish_loggers(loggers, final_metrics)
    return summary

"""How a run's Lightning Trainer is built: hardware and strategy, callbacks, checkpointing, metrics.

Over 400 lines for one job: the Trainer a run gets and the callbacks attached to it (hardware,
seeding per rank, the divergence guard, checkpoints, metrics), for run.py and for the Python API alike.
"""

from __future__ import annotations

import numbers
import os
import re
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from lightning_fabric.utilities.imports import _IS_INTERACTIVE
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.strategies import DDPStrategy

from lightning_genae.augmentation import is_discriminator_side, parse_augment
from lightning_genae.callbacks import (
    AugmentationPreview,
    DiscriminatorReconstructionGrid,
    InterpolationGrid,
    RandomStateInCheckpoints,
    ReconstructionGrid,
    SampleGrid,
    SaveNormaliser,
    SeededEvaluation,
    SeriesAugmentationPreview,
    SeriesReconstructions,
    SeriesSamples,
)
from lightning_genae.callbacks.applicability import applicable
from lightning_genae.callbacks.metrics import GenerativeMetrics, RepresentationMetrics
from lightning_genae.callbacks.overfitting import DiscriminatorOverfitting
from lightning_genae.callbacks.sequence_metrics import SequenceMetrics, build_sequence_metrics
from lightning_genae.checkpoint import (
    CONFIG_KEY,
    AtomicCheckpointIO,
    StoreRunConfig,
    last_checkpoint,
    non_finite_state,
    resume_advice,
    run_folder_of,
)
from lightning_genae.cluster import current_job
from lightning_genae.config import NO_BACKBONE, RunConfig, check_values, device_count, parse_devices
from lightning_genae.console import IterationProgressBar, say, warn
from lightning_genae.datamodules import InMemoryDataModule
from lightning_genae.errors import (
    PLUGIN_HINT,
    ConfigError,
    RunFolderGone,
    TrainingDiverged,
    describe_error,
)
from lightning_genae.lightning_internals import set_logging_step, validation_follows_batch
from lightning_genae.loggers import WATCHED_RUN_FOLDERS
from lightning_genae.metrics.backbones import BackboneUnavailable, check_classifier_trainable, load_backbone
from lightning_genae.metrics.distances import DENSITY_COVERAGE_K, PRECISION_RECALL_K
from lightning_genae.metrics.names import headline_metric, higher_is_better
from lightning_genae.metrics.sequence_classifier import SEQUENCE_DATASETS
from lightning_genae.models import MODELS, GenerativeModule, Sampler
from lightning_genae.models.base import diverged_before_any_update, is_last_training_batch
from lightning_genae.program import resume_command
from lightning_genae.resolve import stated_world_size
from lightning_genae.run_folder import files_named_as_a_runs, started_run_files
from lightning_genae.run_lock import RunFolderRefused
from lightning_genae.stopping import StopOnSignal, cluster_plugins


def runs_several_processes(config: RunConfig) -> bool:
    """Whether the Trainer's `auto` strategy would pick DDP: several devices or several nodes."""
    if device_count(config.devices) is not None:
        return stated_world_size(config) > 1
    # `--devices auto` is every GPU where the accelerator may be one, one process otherwise.
    return config.num_nodes > 1 or (
        config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.device_count() > 1
    )


def build_strategy(config: RunConfig, family: type[GenerativeModule]) -> Any:
    """Adversarial models leave one network without gradients in each backward; DDP must expect that,
    also where `--strategy auto` picks DDP for several devices."""
    if not family.adversarial or "find_unused" in config.strategy:
        return config.strategy
    strategy = config.strategy
    if strategy == "auto" and runs_several_processes(config):
        # What Lightning's `auto` picks for several processes: forked in a notebook, else started as scripts.
        strategy = "ddp_fork" if _IS_INTERACTIVE else "ddp"
    start_method = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}.get(
        strategy
    )
    if start_method is not None:
        return DDPStrategy(find_unused_parameters=True, start_method=start_method)
    return config.strategy


def hardware_arguments(config: RunConfig, family: type[GenerativeModule]) -> dict[str, Any]:
    """The Trainer arguments that say where and how numerically a model runs."""
    return {
        "precision": config.precision,
        "accelerator": config.accelerator,
        "devices": parse_devices(config.devices),
        "strategy": build_strategy(config, family),
        "num_nodes": config.num_nodes,
    }


NVML_CUDA_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def skip_repeated_cuda_probes() -> None:
    """On a machine without a CUDA device, let torch answer "is CUDA available?" without a library load.

    Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1, so that its own availability checks do not
    initialise CUDA before DataLoader workers fork. torch then answers `torch.cuda.is_available()` through
    NVML and caches the answer only once CUDA is initialised, which never happens without a device: every
    call loads the NVML library again. Adam asks at every `step()` (its graph-capture check), which cost
    0.28 ms per optimizer step on a 2-core CPU with torch's CUDA build (0.34 against 0.06 ms for a
    10-parameter Adam step), in a GAN iteration two of them. Where torch sees no device there is no CUDA
    to initialise and nothing for the NVML check to protect, so torch's own check (the CUDA runtime's device
    count, which answers 0 at once) is used. With a device the setting is left as Lightning made it, and
    torch caches the count after the run initialises CUDA.
    """
    if os.environ.get(NVML_CUDA_CHECK) == "1" and not torch.cuda.is_available():
        os.environ[NVML_CUDA_CHECK] = "0"


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


class LogStepIsIteration(Callback):
    """Training rows are logged at the 0-based index of their iteration, also after a resume.

    Lightning labels training rows with its own batch counter, restored from the checkpoint. Resumed from
    a checkpoint written at the end of a run whose last iteration was also a validation step (every
    `last.ckpt` of a run whose length divides by --eval-every), its first pass through the loop trains
    nothing but still advances that counter, so every later row was labelled one iteration late, and the
    final batch was logged twice (pytorch-lightning 2.6, `_TrainingEpochLoop.advance` returning early on
    `restarted_on_last`). The optimizer-step count is always right; the logging counter is set from it.
    """

    def __init__(self, steps_per_iteration: int) -> None:
        self.steps_per_iteration = steps_per_iteration

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # The counter Lightning's logger connector and LearningRateMonitor read for the step of a row.
        set_logging_step(trainer, trainer.global_step // self.steps_per_iteration)


class ValidateLastIteration(Callback):
    """Training's last iteration is a validation step whatever --eval-every is, so the final weights are a
    candidate for best.ckpt as every periodic validation's are, and the final evaluation takes that
    validation's numbers (the same seeded ones) instead of validating again.

    Lightning validates after a batch that asks training to stop (`should_stop`); asking it at the last
    batch stops nothing that would have gone on.
    """

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if is_last_training_batch(trainer, batch_idx):
            trainer.should_stop = True


def log_every_n_steps(config: RunConfig) -> int:
    """Iterations between two rows of training values in the loggers."""
    return min(10, config.eval_every)


class DivergenceGuard(Callback):
    """Stops a run whose training diverged with one line, and never lets a non-finite checkpoint be written.

    The losses the model noted (`watch_losses`) are checked, with one device sync, every `check_every`
    iterations (each cadence at which something reads the weights: logging, image grids), before each
    validation, at the end of training and before every checkpoint write; a checkpoint about to be written
    is refused when any weight, buffer (batch-norm statistics, BEGAN's k) or optimizer-state tensor is NaN
    or infinite. Raising from `on_save_checkpoint` happens before Lightning writes the file, so the last
    finite checkpoint stays as it was, and the message names it (or says there is none).
    It is the first callback, so no image callback draws from weights it has not checked.
    """

    def __init__(self, checkpoint_dir: Path | None, check_every: tuple[int, ...], precision: str) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.check_every = tuple(every for every in check_every if every > 0)
        self.precision = precision
        # The iteration training started from: above 0 when the run was resumed.
        self.started_at = 0
        # The --lr the resumed checkpoint was trained with (None: not resumed, or not recorded).
        self.resumed_lr: float | None = None
        # The checkpoint training resumed from (None: not resumed).
        self.resumed_from: Path | None = None

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        stored = checkpoint.get(CONFIG_KEY)
        lr = stored.get("lr") if isinstance(stored, dict) else None
        if isinstance(lr, (int, float)) and not isinstance(lr, bool):
            self.resumed_lr = float(lr)

    def on_train_start(self, trainer: pl.Trainer, pl_module: GenerativeModule) -> None:
        self.started_at = pl_module.iteration
        self.resumed_from = Path(trainer.ckpt_path) if trainer.ckpt_path else None

    def diverged(self, cause: str, model: GenerativeModule) -> TrainingDiverged:
        """The one-line error: what diverged, and what to do about it (a loss not finite before any update
        says where to look itself: no resume or learning rate helps)."""
        if diverged_before_any_update(cause) and self.started_at == 0:
            return TrainingDiverged(cause)
        lr = getattr(model.options, "lr", None)
        advice = resume_advice(
            self.checkpoint_dir,
            model.optimizer_steps_per_iteration,
            lower_lr=model.lower_learning_rate(),
            started_at=self.started_at,
            # A resume at the checkpoint's --lr or above that diverges says nothing of its weights.
            retried_lower=self.resumed_lr is None or not isinstance(lr, float) or lr < self.resumed_lr,
            resumed_from=self.resumed_from,
        )
        if "16" in self.precision:
            advice += " (or use --precision 32-true)"
        return TrainingDiverged(f"{cause}; {advice}")

    def stop_if_diverged(self, trainer: pl.Trainer, model: GenerativeModule, cause: str | None) -> None:
        """Raise on every process when any found a cause: a process that raised alone would leave the others
        waiting for it in the next collective (the gradient all-reduce, the barrier after a save)."""
        if trainer.strategy.reduce_boolean_decision(cause is not None, all=False):
            raise self.diverged(cause or "training diverged in another process", model)

    def check_losses(self, trainer: pl.Trainer, model: GenerativeModule) -> None:
        self.stop_if_diverged(trainer, model, model.first_non_finite_loss())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: GenerativeModule, *args: Any) -> None:
        if any(pl_module.iteration % every == 0 for every in self.check_every):
            self.check_losses(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: GenerativeModule) -> None:
        if trainer.state.fn == "fit":
            self.check_losses(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: GenerativeModule) -> None:
        self.check_losses(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: GenerativeModule, checkpoint: dict) -> None:
        self.check_losses(trainer, pl_module)
        # Batch-norm statistics are each process's own under DDP, so one process may find what others do not.
        non_finite = non_finite_state(checkpoint)
        cause = None
        if non_finite:
            others = len(non_finite) - 1
            more = f" and {others} more tensor{'s' if others > 1 else ''}" if others else ""
            cause = (
                f"{non_finite[0]}{more} of the model or its optimizer became NaN or infinite by step "
                f"{pl_module.iteration}, so that checkpoint was not written"
            )
        self.stop_if_diverged(trainer, pl_module, cause)


class RunFolderPresence(Callback):
    """Stops the run with one line when its folder is gone before a checkpoint is written there, or as a
    later stage on the same Trainer (the final evaluation's validation and test) starts.

    Lightning makes a checkpoint's folders as it writes it, so a run whose folder was moved or deleted would
    make it again and train on there without its config.yaml (the metrics logger and the pictures say so
    when they next write; a checkpoint can come first).
    """

    def __init__(self, run_dir: Path, continue_with: str = "--resume last") -> None:
        self.run_dir = run_dir
        # How to continue the run once its folder is back: run.py's resume, or the Trainer's.
        self.continue_with = continue_with
        self._had_the_folder = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" or not self._had_the_folder:
            # The folder exists from here (`callbacks_for` may be given one to make, for a training or for
            # an evaluation alone), so its absence later means it went.
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._had_the_folder = True
        elif not self.run_dir.is_dir():
            raise RunFolderGone.at(self.run_dir, self.continue_with)
        WATCHED_RUN_FOLDERS[self.run_dir.resolve()] = self.continue_with

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        WATCHED_RUN_FOLDERS.pop(self.run_dir.resolve(), None)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # Lightning calls no teardown after an exception.
        WATCHED_RUN_FOLDERS.pop(self.run_dir.resolve(), None)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: GenerativeModule, checkpoint: dict) -> None:
        # Decided together: a process that raised alone would leave the others waiting at the next barrier.
        if trainer.strategy.reduce_boolean_decision(not self.run_dir.is_dir(), all=False):
            raise RunFolderGone.at(self.run_dir, self.continue_with)


def build_callbacks(config: RunConfig, family: type[GenerativeModule], run_dir: Path) -> list[Callback]:
    """The divergence guard, image grids, representation metrics, per-rank seeding, and (unless a set-up
    check) checkpoints."""
    callbacks: list[Callback] = [
        DivergenceGuard(
            None if config.fast_dev_run else run_dir / "checkpoints",
            check_every=(log_every_n_steps(config), config.image_every),
            precision=config.precision,
        ),
        # Before every callback that draws at a validation's start.
        SeededEvaluation(config.seed),
        ValidateLastIteration(),
        SampleGrid(every_n_steps=config.image_every, seed=config.seed + 1234),
        ReconstructionGrid(every_n_steps=config.image_every),
        InterpolationGrid(every_n_steps=config.image_every, seed=config.seed + 4321),
        DiscriminatorReconstructionGrid(every_n_steps=config.image_every, seed=config.seed + 2468),
        # Each picture callback draws only for models of its data kind (images or series).
        SeriesReconstructions(every_n_steps=config.image_every),
        SeriesSamples(every_n_steps=config.image_every, seed=config.seed + 1234),
        SaveNormaliser(),
        RepresentationMetrics(seed=config.seed),
        DiscriminatorOverfitting(seed=config.seed),
        SeedPerRank(config.seed),
    ]
    if config.augment != "none":
        discriminator_side = is_discriminator_side(parse_augment(config.augment))
        callbacks.append(AugmentationPreview(seed=config.seed, discriminator_side=discriminator_side))
        callbacks.append(SeriesAugmentationPreview(seed=config.seed))
    if config.fast_dev_run:
        # A set-up check: its weights are worthless and must not look like a run to resume.
        return callbacks
    callbacks += [
        RunFolderPresence(run_dir),
        StoreRunConfig(config),
        RandomStateInCheckpoints(),
        PeriodicLastCheckpoint(
            dirpath=run_dir / "checkpoints",
            every_n_train_steps=config.ckpt_every * family.optimizer_steps_per_iteration,
            save_top_k=0,
            save_last=True,
            # Always last.ckpt, the file --resume last reads: a resume that cannot restore this callback's
            # state (a run folder moved or copied, a checkpoint of another version) would otherwise find
            # last.ckpt taken and write last-v1.ckpt, leaving last.ckpt behind.
            enable_version_counter=False,
        ),
        # Ctrl-C, SIGTERM and SLURM's warning signal save last.ckpt at an iteration boundary and stop.
        StopOnSignal(last_checkpoint(run_dir), run_dir),
    ]
    return callbacks


def metric_callbacks(
    config: RunConfig, model: GenerativeModule, datamodule: InMemoryDataModule, run_dir: Path
) -> tuple[GenerativeMetrics | None, SequenceMetrics | None, ModelCheckpoint | None]:
    """The generative metric callbacks the model and data allow, and the keeper of the best checkpoint.

    A family with no validation objective of its own (the GANs) is judged by the image metric's headline
    (`val/fd_classifier` or `val/fid_inception`), so the model's `monitor` is set to it here.
    """
    metrics_callback = generative_metrics(config, model, datamodule)
    if metrics_callback is not None and model.monitor is None:
        model.monitor = headline_metric(metrics_callback.backbone.name)
    series_callback = sequence_metrics(config, model, datamodule)
    chosen = None
    if model.monitor is not None and not config.fast_dev_run:
        chosen = best_checkpoint(model, run_dir)
    return metrics_callback, series_callback, chosen


def family_name(model: GenerativeModule) -> str:
    """The registry name of `model`'s family (`vae` for a VAEModule or a subclass of it)."""
    classes = {name: spec.module for name, spec in MODELS.items()}
    # The exact class first: one family's module may subclass another's.
    for name, family in classes.items():
        if type(model) is family:
            return name
    for name, family in classes.items():
        if isinstance(model, family):
            return name
    families = ", ".join(MODELS)
    raise ConfigError(f"{type(model).__name__} is not a lightning-genae family; use one of {families}")


def callbacks_for(
    model: GenerativeModule,
    datamodule: InMemoryDataModule,
    output_dir: str | Path,
    *,
    every_n_steps: int = RunConfig.image_every,
    checkpoint_every: int = RunConfig.ckpt_every,
    seed: int = 0,
    metrics: bool = True,
    eval_samples: int = RunConfig.eval_samples,
    backbone: str = RunConfig.backbone,
    inception_weights: str | Path | None = None,
    classifier_weights: str | Path | None = None,
) -> list[Callback]:
    """The callbacks a `run.py` run gets, at its defaults, for a `pl.Trainer` of your own, which must be
    given `default_root_dir=output_dir` (where the image grids go; a Trainer without it is refused when
    fitting starts).

    Image grids every `every_n_steps` training iterations (samples, reconstructions, interpolations, what
    the family has), the divergence guard, `checkpoints/last.ckpt` every `checkpoint_every` iterations and
    on Ctrl-C or SIGTERM, and with `metrics` the generative metrics at each validation (FD, KID,
    precision/recall, density/coverage over `eval_samples` images in the features of `backbone`: the
    dataset's classifier, trained on first use and cached, or the one in `classifier_weights`; or
    Inception, with `inception_weights`) with `checkpoints/best.ckpt` on the headline one. Callbacks that
    cannot act for this model and data are left out.
    """
    if not isinstance(datamodule, InMemoryDataModule):
        raise ConfigError(
            f"callbacks_for reads the data through a lightning-genae DataModule, got "
            f"{type(datamodule).__name__}; hand your images over as "
            "lightning_genae.datamodules.TensorImageDataModule (docs/python-api.md)"
        )
    if not isinstance(output_dir, (str, os.PathLike)):
        raise ConfigError(
            f"callbacks_for: output_dir must be a folder's path, got {type(output_dir).__name__}"
        )
    run_dir = Path(output_dir)
    try:
        config = RunConfig.from_dict(
            {
                "model": family_name(model),
                "data": datamodule.name,
                "seed": seed,
                "image_every": every_n_steps,
                "ckpt_every": checkpoint_every,
                "eval_samples": eval_samples,
                "backbone": backbone,
                "inception_weights": None if inception_weights is None else str(inception_weights),
                "classifier_weights": None if classifier_weights is None else str(classifier_weights),
            }
        )
        check_values(config)
    except ConfigError as error:
        raise ConfigError(f"callbacks_for: {in_python_terms(str(error))}") from None
    callbacks = [WritesUnder(run_dir), *build_callbacks(config, type(model), run_dir)]
    # run.py cannot rebuild this run (its data and model options are the caller's): the Trainer can.
    last = str(last_checkpoint(run_dir).resolve())
    resume = f"trainer.fit(model, datamodule=..., ckpt_path={last!r}) with the same model, data, Trainer"
    for callback in callbacks:
        if isinstance(callback, (StopOnSignal, RunFolderPresence)):
            callback.continue_with = resume
    if metrics:
        try:
            callbacks += [c for c in metric_callbacks(config, model, datamodule, run_dir) if c is not None]
        except BackboneUnavailable as error:
            raise BackboneUnavailable(f"callbacks_for: {in_python_terms(str(error))}") from None
    return applicable(callbacks, model, datamodule)


# callbacks_for's arguments by the run.py flags of the same settings, which the checks' messages name.
CALLBACKS_FOR_ARGUMENTS = {
    "--image-every": "every_n_steps",
    "--ckpt-every": "checkpoint_every",
    "--eval-samples": "eval_samples",
    "--backbone": "backbone",
    "--seed": "seed",
    "--inception-weights": "inception_weights",
    "--classifier-weights": "classifier_weights",
}


def in_python_terms(message: str) -> str:
    """A check's message with each run.py flag replaced by callbacks_for's argument of that setting."""
    flags = "|".join(re.escape(name) for name in CALLBACKS_FOR_ARGUMENTS)
    return re.sub(rf"({flags})(?![\w-])", lambda found: CALLBACKS_FOR_ARGUMENTS[found.group(1)], message)


def load_model(checkpoint: str | Path) -> GenerativeModule:
    """The model a `run.py` run saved (`checkpoints/last.ckpt` or `best.ckpt`), of the family the run
    trained, with its weights, in eval mode on the CPU. The file is read safely (weights and plain values
    only); one that is not a run's checkpoint is a ConfigError naming the fix."""
    from lightning_genae.checkpoint import RunCheckpoint
    from lightning_genae.plugins import load_plugins

    if not isinstance(checkpoint, (str, os.PathLike)):
        raise ConfigError(f"load_model: give a checkpoint file's path, got {type(checkpoint).__name__}")
    saved = RunCheckpoint.load(checkpoint, "load_model")
    family = saved.stored_config("load_model").get("model")
    load_plugins()
    if family not in MODELS:
        raise ConfigError(
            f"load_model: {checkpoint} holds a run of the family {family!r}, which is not registered here; "
            f"import the module that registers it first {PLUGIN_HINT}"
        )
    # Only the family: the model is rebuilt from the checkpoint's hyper-parameters, whatever data, weights
    # files or augmentation the run was given. Building it draws initial weights, which the checkpoint's
    # replace: the global random state is left as it was, so a seeded script draws the same numbers after.
    with torch.random.fork_rng(devices=[]):
        return saved.restore(MODELS[family].module, "load_model")


class WritesUnder(Callback):
    """Refuses a Trainer whose `default_root_dir` is not the callbacks' folder: the picture callbacks write
    under the Trainer's folder and the checkpoints under theirs, so a run would be split in two."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if Path(trainer.default_root_dir).resolve() != self.run_dir.resolve():
            raise ConfigError(
                f"the callbacks write to {self.run_dir} and the Trainer to {trainer.default_root_dir}; give "
                f"pl.Trainer(default_root_dir={str(self.run_dir)!r}) so that the image grids go there too"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Before the first batch, once Lightning has restored any checkpoint it was given (only then is
        # trainer.ckpt_path known): a training that continues no run there, none or another folder's,
        # would write over the files there.
        held = list(dict.fromkeys([*started_run_files(self.run_dir), *files_named_as_a_runs(self.run_dir)]))
        if not held:
            return
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        if trainer.ckpt_path is not None:
            checkpoint = Path(trainer.ckpt_path).resolve()
            # A checkpoint anywhere in the folder (a plain ModelCheckpoint's subfolder) is its run's.
            if self.run_dir.resolve() not in checkpoint.parents:
                continued = run_folder_of(checkpoint)
                raise RunFolderRefused(
                    f"callbacks_for: {self.run_dir} holds another run ({shown}) than the checkpoint's "
                    f"({continued}), which this training would write over; continue that run with "
                    f"output_dir={str(continued)!r}, or give an output_dir of its own"
                )
            return
        raise RunFolderRefused(
            f"callbacks_for: {self.run_dir} already holds {shown}, which this training would write over; "
            "give an output_dir of its own (and the Trainer's default_root_dir), or continue the run "
            f"there with trainer.fit(..., ckpt_path={str(last_checkpoint(self.run_dir))!r})"
        )


class PeriodicLastCheckpoint(ModelCheckpoint):
    """checkpoints/last.ckpt every N optimizer steps, its saved state filed under one name whatever N is.

    Lightning names a ModelCheckpoint's state by its settings, the cadence among them. A resume may change
    `--ckpt-every`, and under that name the resumed trainer would find no state for its callback, leave it
    unread and warn that a callback used to create the checkpoint is missing. The name is the class's, so
    a trainer holds one of these.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._save_after_validation = False

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # At an iteration that also validates, the save waits for the validation: saved before it, a run
        # killed during the validation would resume past it, and the validation would never run (a hole in
        # the curves, a best.ckpt candidate never weighed). Killed during it, the run resumes from the
        # previous save and runs the iterations and the validation again.
        if validation_follows_batch(trainer):
            self._save_after_validation = True
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._save_after_validation and not trainer.sanity_checking:
            self._save_after_validation = False
            # The parent's batch-end rule (the cadence, not twice at one step), on the state after validation.
            super().on_train_batch_end(trainer, pl_module, None, None, 0)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # Lightning warns, at every save of an adversarial family, that the weights are those after the
        # iteration's updates: they are meant to be, as a resume continues from there. Filtered for the
        # process once (a catch_warnings around each save would reset which other warnings were shown).
        warnings.filterwarnings(
            "ignore", ".*ModelCheckpoint with manual optimization and every_n_train_steps"
        )


class BestCheckpoint(ModelCheckpoint):
    """checkpoints/best.ckpt: the weights with the best value of the family's headline validation metric.

    On a resume, the best value so far is read from best.ckpt itself, which records the value it was saved
    for, and not from the resumed checkpoint's record of it. Lightning's record is not restored in a run
    folder copied or moved elsewhere, so the first validation there counted as a new best whatever its
    value and went to best-v1.ckpt, leaving best.ckpt stale beside it; and in any folder the record can be
    a validation behind the file (last.ckpt is saved before the validation that may pick a new best), so a
    worse model could replace a better one. The file cannot disagree with itself. Without a readable
    best.ckpt in the run's folder nothing is restored, and nothing outside the folder is read.
    """

    def __init__(self, dirpath: Path, monitor: str, mode: str) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="best",
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            # The run's own best.ckpt that records no value (unreadable, or chosen on another metric) is
            # replaced by the next best, not kept beside best-v1.ckpt, best-v2.ckpt...
            enable_version_counter=False,
        )

    @property
    def state_key(self) -> str:
        # A key of its own: a plug-in's ModelCheckpoint on the same metric would otherwise share one.
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing of the resumed checkpoint's record is taken; `on_fit_start` reads best.ckpt."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # At the fit's start, not its training's: a run resumed at the end of its budget (stopped during its
        # final evaluation) trains nothing, and its summary names the best checkpoint all the same.
        super().on_fit_start(trainer, pl_module)
        if trainer.ckpt_path is None or self.dirpath is None:
            return
        # One rank looks at the folder, so all ranks agree on the record (its top-k decisions are collective).
        record = (
            self.record_in(Path(self.dirpath) / f"{self.filename}{self.FILE_EXTENSION}")
            if trainer.is_global_zero
            else None
        )
        record = trainer.strategy.broadcast(record)
        if record is None:
            return
        path, score = record
        self.best_model_path = self.kth_best_model_path = path
        self.best_model_score = self.kth_value = torch.tensor(score)
        self.best_k_models = {path: self.best_model_score}

    def record_in(self, path: Path) -> tuple[str, float] | None:
        """(path, the value best.ckpt was saved for), or None when the file is absent or records none."""
        if not path.is_file():
            return None
        try:
            contents = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file is one that records nothing
            warn(f"resume: {path} could not be read ({describe_error(error)}); the best is chosen afresh")
            return None
        for state in contents.get("callbacks", {}).values():
            if (
                isinstance(state, dict)
                and state.get("monitor") == self.monitor
                and state.get("best_model_score") is not None
                and Path(str(state.get("best_model_path", ""))).name == path.name
            ):
                return str(path), float(state["best_model_score"])
        return None


# The keys the two checkpoint callbacks' states were saved under when both were plain ModelCheckpoints.
_FORMER_PERIODIC_KEY = re.compile(
    r"ModelCheckpoint\{'monitor': None, 'mode': 'min', 'every_n_train_steps': \d+, 'every_n_epochs': 0, "
    r"'train_time_interval': None\}"
)


def only_former_keys_unread(contents: dict[str, Any], callbacks: list[Callback]) -> bool:
    """Whether every callback state in a checkpoint that no callback of this trainer reads was saved by this
    package's own checkpoint callbacks under their former names. Their states are not needed (best.ckpt
    records its own value; the periodic save keeps no state worth reading), so Lightning's warning that
    callbacks are missing would only alarm; any other unread state keeps the warning."""
    unread = set(contents.get("callbacks") or {}) - {callback.state_key for callback in callbacks}
    former_best = {
        ModelCheckpoint(monitor=callback.monitor, mode=callback.mode).state_key
        for callback in callbacks
        if isinstance(callback, BestCheckpoint)
    }
    return bool(unread) and all(key in former_best or _FORMER_PERIODIC_KEY.fullmatch(key) for key in unread)


def best_checkpoint(model: GenerativeModule, run_dir: Path) -> ModelCheckpoint:
    """Keeps the checkpoint with the best value of the family's headline validation metric."""
    # Which side is better comes from the metric vocabulary, so a family cannot get it backwards.
    return BestCheckpoint(
        run_dir / "checkpoints", model.monitor, "max" if higher_is_better(model.monitor) else "min"
    )


def generative_metrics(
    config: RunConfig, model: GenerativeModule, datamodule: InMemoryDataModule
) -> GenerativeMetrics | None:
    """The image metric callback for models that sample; None for series (their metrics have callbacks of
    their own), and None, with one warning, when the default classifier cannot be had (unlabelled data). A
    backbone or weights the run chose that cannot be had is an error (BackboneUnavailable)."""
    if not isinstance(model, Sampler) or datamodule.data_kind != "image" or config.backbone == NO_BACKBONE:
        return None
    # A classifier trained on first use learns from the real data, never an augmented wrapper's.
    real_data = getattr(datamodule, "base", datamodule)
    chosen = config.backbone == "inception" or config.classifier_weights is not None
    try:
        if not chosen:
            # Decided by the data's labels alone, before the splits are checked and anything is trained.
            check_classifier_trainable(config.data, real_data)
        # Only where the metrics will be computed (a run whose metrics are skipped is not refused), and
        # before a classifier is trained for a run that could not use it.
        _check_comparable_splits(config, datamodule)
        backbone = load_backbone(
            config.backbone,
            config.data,
            real_data,
            inception_weights=config.inception_weights,
            classifier_weights=config.classifier_weights,
        )
    except BackboneUnavailable as error:
        if chosen:
            # A backbone or weights the user chose (Inception is never the default) are expected to work: a
            # run without the metrics they asked for is an error at the start, not a warning.
            raise
        # One of the run's own lines, not a Python warning headed by this file's path.
        say(f"generative metrics skipped: {error}")
        model.image_metrics_skipped = str(error)
        return None
    if config.classifier_weights is not None:
        # Confirms which file the run's FD and its relatives are measured with.
        say(f"image metrics: features of the {backbone.description}")
    return GenerativeMetrics(backbone, num_samples=config.eval_samples, seed=config.seed)


def _check_comparable_splits(config: RunConfig, datamodule: InMemoryDataModule) -> None:
    """Refuse, before training, a split too small for the image metrics: precision/recall and density/
    coverage measure k-nearest-neighbour radii within the real images, which need more than k of them."""
    needed = max(PRECISION_RECALL_K, DENSITY_COVERAGE_K) + 1
    for split in ("val", "test"):
        count = len(datamodule.split_tensors(split)[0])
        if count < needed:
            raise ConfigError(
                f"the image metrics compare generated images with the {split} split of {config.data}, "
                f"which holds {count} {'image' if count == 1 else 'images'}; they need at least {needed}: "
                "give more images, or --backbone none to train without them"
            )


def sequence_metrics(
    config: RunConfig, model: GenerativeModule, datamodule: InMemoryDataModule
) -> SequenceMetrics | None:
    """The series metric callback (discriminative_quick, predictive_quick, smnist FD); None for images."""
    callback = build_sequence_metrics(
        model,
        datamodule,
        num_samples=config.eval_samples,
        seed=config.seed,
        feature_metrics=config.backbone != NO_BACKBONE,
    )
    real_name = getattr(datamodule, "base", datamodule).name
    if callback is not None and config.backbone != NO_BACKBONE and real_name not in SEQUENCE_DATASETS:
        # Said and recorded as an image run's skipped metrics are: a missing fd_classifier is not silent.
        why = (
            f"{real_name} has no sequence feature classifier (one is shipped for "
            f"{', '.join(SEQUENCE_DATASETS)}); the sequence scores are measured without it"
        )
        say(f"series feature metrics skipped: {why}")
        model.image_metrics_skipped = why
    return callback


def evaluation_records(*callbacks: GenerativeMetrics | SequenceMetrics | None) -> dict[str, Any]:
    """What the metric callbacks of a run measured, per stage, for summary.json and eval.json."""
    return {
        stage: record
        for callback in callbacks
        if callback is not None
        for stage, record in callback.records.items()
    }


def skipped_metrics_record(config: RunConfig, model: GenerativeModule) -> dict[str, Any]:
    """`{"skipped": {backbone: why}}` for summary.json and eval.json where the image metrics were left out,
    as --evaluate-folder records a backbone it could not use; empty otherwise."""
    if model.image_metrics_skipped is None:
        return {}
    return {"skipped": {config.backbone: model.image_metrics_skipped}}


def trainer_kwargs(
    model: GenerativeModule | type[GenerativeModule], iterations: int, eval_every: int | None = None
) -> dict[str, Any]:
    """`pl.Trainer` arguments that train `iterations` training iterations of `model`'s family, and with
    `eval_every` validate every that many iterations, across epoch boundaries, as `run.py --eval-every`.

    Lightning's `max_steps` counts optimizer steps; a family with several optimizers (GAN: 2, AAE and
    VAE-GAN: 3) takes that many per iteration, so the budget is scaled here, as the CLI does
    (`validation_every` for the cadence). Unlike `run.py`, a Trainer does not validate after its last
    iteration unless `eval_every` divides `iterations`.
    """
    if not (
        isinstance(model, GenerativeModule)
        or (isinstance(model, type) and issubclass(model, GenerativeModule))
    ):
        shown = f"the name {model!r}" if isinstance(model, str) else f"a {type(model).__name__}"
        raise ConfigError(
            f"trainer_kwargs takes a family's module or its class, got {shown}; pass MODELS[name].module "
            "or the module you built"
        )
    _check_count("iterations", iterations)
    if eval_every is not None:
        _check_count("eval_every", eval_every)
    kwargs: dict[str, Any] = {
        "max_steps": int(iterations) * model.optimizer_steps_per_iteration,
        "max_epochs": None,
    }
    if eval_every is not None:
        kwargs.update(validation_every(int(eval_every)))
    return kwargs


def _check_count(name: str, value: Any) -> None:
    """A count of iterations a Python caller gave: a whole number >= 1 (not a float, a bool or None)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ConfigError(
            f"{name} must be a whole number >= 1, got {value!r}; give a positive count of iterations"
        )


def validation_every(iterations: int) -> dict[str, Any]:
    """`pl.Trainer` arguments that validate every `iterations` training iterations across epoch boundaries,
    so tiny and huge datasets behave alike: Lightning's `val_check_interval` counts training batches (one
    batch is one iteration, whatever the optimizer steps it takes), within each epoch unless validation by
    epoch is turned off."""
    return {"val_check_interval": iterations, "check_val_every_n_epoch": None}


def hardware_trainer(
    config: RunConfig, family: type[GenerativeModule], **trainer_arguments: Any
) -> pl.Trainer:
    """A `pl.Trainer` of `family` on `config`'s hardware (`hardware_arguments`); hardware this machine lacks
    (a run trained on a GPU, resumed or evaluated on a machine without one) is one line naming the settings
    in effect and the flags to change."""
    manual_launch = "NODE_RANK" in os.environ and "MASTER_ADDR" in os.environ
    if config.num_nodes > 1 and current_job() is None and not manual_launch:
        # Lightning would start this node's processes and wait for the other nodes' forever, silently.
        raise ConfigError(
            f"--num-nodes {config.num_nodes} outside a job that starts the other nodes (SLURM's srun, "
            "torchrun, or NODE_RANK and MASTER_ADDR set on each node): the run would wait for them without "
            "end; give --num-nodes 1 (a resumed or evaluated run keeps its own unless typed)"
        )
    try:
        return pl.Trainer(**hardware_arguments(config, family), **trainer_arguments)
    except (MisconfigurationException, ValueError, RuntimeError, TypeError, ImportError) as error:
        # ImportError: an accelerator or strategy whose package is not installed (tpu: torch_xla).
        raise ConfigError(
            f"Trainer set-up failed: {describe_error(error)}; in effect: --accelerator {config.accelerator} "
            f"--devices {config.devices} --num-nodes {config.num_nodes} --strategy {config.strategy} "
            f"--precision {config.precision} (a resumed or evaluated run keeps its own unless typed): check "
            "them, e.g. --accelerator cpu --devices 1 --num-nodes 1 on a machine without a GPU"
        ) from None


def build_trainer(
    config: RunConfig,
    family: type[GenerativeModule],
    run_dir: Path,
    loggers: list,
    callbacks: list[Callback],
) -> pl.Trainer:
    """The training Trainer: budget and cadences in training iterations, whatever the family's step count."""
    steps_per_iteration = family.optimizer_steps_per_iteration
    skip_repeated_cuda_probes()
    return hardware_trainer(
        config,
        family,
        default_root_dir=str(run_dir),
        # Lightning counts optimizer steps; --max-steps counts training iterations.
        max_steps=trainer_kwargs(family, config.max_steps)["max_steps"] if config.max_steps else -1,
        max_epochs=config.max_epochs if config.max_epochs else (None if config.max_steps else -1),
        logger=loggers,
        callbacks=[*callbacks, LogStepIsIteration(steps_per_iteration), IterationProgressBar()],
        # The console prints one line about the model instead of Lightning's table.
        enable_model_summary=False,
        log_every_n_steps=log_every_n_steps(config),
        **validation_every(config.eval_every),
        num_sanity_val_steps=0,
        fast_dev_run=config.fast_dev_run,
        plugins=[
            *cluster_plugins(),
            AtomicCheckpointIO(resume_command(run_dir)),
        ],
    )


def prepare_data_early(datamodule: InMemoryDataModule, trainer: pl.Trainer) -> None:
    """Surface missing or bad data before a run folder or logger is created (local rank 0 only)."""
    if trainer.local_rank != 0:
        return
    datamodule.trainer = trainer
    datamodule.prepare_data()
    datamodule.setup("fit")

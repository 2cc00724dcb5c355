"""One training run from a resolved configuration: data, model, augmentation, Trainer, run folder."""

from __future__ import annotations

import json
import shlex
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from lightning_genae.api import evaluation_records, metric_callbacks, skipped_metrics_record
from lightning_genae.augmentation.discriminator import Composed
from lightning_genae.callbacks.applicability import applicable
from lightning_genae.callbacks.checkpoints import PeriodicLastCheckpoint
from lightning_genae.callbacks.grouping import grouped
from lightning_genae.callbacks.random_state import SeededEvaluation
from lightning_genae.callbacks.stopping import StopOnSignal
from lightning_genae.checkpoint import RunCheckpoint, in_a_run_folder
from lightning_genae.cluster import RANK_ZERO_GONE, RankZeroStopped, run_stamp, start_gate
from lightning_genae.datamodules import InMemoryDataModule
from lightning_genae.datamodules.base import SPLITS
from lightning_genae.errors import GenaeError
from lightning_genae.experiment.config import RunConfig
from lightning_genae.experiment.evaluate import evaluate_selected_checkpoint, final_evaluation
from lightning_genae.experiment.loggers import build_loggers, finish_loggers, logged_values
from lightning_genae.experiment.program import command_prefix
from lightning_genae.experiment.resolve import ResolvedRun, refuse_a_folder_among_the_data
from lightning_genae.experiment.resume import (
    AugmenterInCheckpoints,
    LearningRateOnResume,
    check_same_augmenter,
    check_steps_left,
    continue_from,
    say_what_changes,
    training_complete,
)
from lightning_genae.experiment.run_folder import ClaimedRunFolder, started_by_an_earlier_attempt_of_this_job
from lightning_genae.experiment.trainer import (
    build_callbacks,
    build_trainer,
    callback_settings,
    collapse_warning,
    describe_model,
    describe_training,
    environment_info,
    format_final_line,
    format_metrics_table,
    prepare_data_early,
    scalar_metrics,
    stop_during_final_evaluation,
    stop_outside_training,
)
from lightning_genae.metrics.names import test_headline
from lightning_genae.models import GenerativeModule
from lightning_genae.progress import say
from lightning_genae.run_files import CONFIG_FILE, CONFIG_HEADER, METRICS_FILE
from lightning_genae.seeding import int_seed

if TYPE_CHECKING:
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_genae.callbacks.metrics import GenerativeMetrics
    from lightning_genae.callbacks.sequence_metrics import SequenceMetrics


def default_run_dir(config: RunConfig) -> Path:
    """`runs/<model>-<data>-<augment>-seed<seed>-<stamp>`, the stamp the same on every rank (`run_stamp`)."""
    return Path("runs") / f"{config.model}-{config.data}-{config.augment}-seed{config.seed}-{run_stamp()}"


def log_last_training_values(
    trainer: pl.Trainer, model: GenerativeModule, fit_metrics: dict[str, float]
) -> None:
    """Record the final batch's training values when Lightning's every-N-steps cadence did not write them,
    and only where they are the final batch's (never an earlier batch's under the final step)."""
    last_batch = model.iteration - 1
    logged = model.last_logged_training
    training_values = {key: value for key, value in fit_metrics.items() if key.startswith("train/")}
    if not training_values or logged is None or logged.written or logged.iteration != last_batch:
        return
    for logger in trainer.loggers:
        logger.log_metrics(training_values, step=last_batch)
        logger.save()


class TrainingStarted(Callback):
    """Notes the first batch's end, after which a failure leaves a run worth keeping, and `finished`."""

    def __init__(self, on_start: Callable[[], None] = lambda: None) -> None:
        self.started = False
        self.finished = False
        self._on_start = on_start

    def on_train_batch_end(self, *args: Any) -> None:
        if not self.started:
            self.started = True
            self._on_start()


WALL_TIME_KEY = "genae_wall_time_s"


class RunWallClock(Callback):
    """The run's wall-clock seconds over all its sessions, which each checkpoint carries up to it (through the
    checkpoint hooks, not a callback state, so that it stays groupable)."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._earlier_sessions_s = 0.0

    def seconds(self) -> float:
        return self._earlier_sessions_s + time.monotonic() - self._started

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[WALL_TIME_KEY] = self.seconds()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        self._earlier_sessions_s = float(checkpoint.get(WALL_TIME_KEY, 0.0))


def run(
    resolved: ResolvedRun,
    resume: RunCheckpoint | None = None,
    *,
    explicit_resume: bool = False,
    brief: bool = False,
    replacing: str = "--overwrite",
) -> dict[str, Any]:
    """Train (or resume) one run and write its folder; returns summary.json's contents."""
    config = resolved.config
    if config.output:
        run_dir = Path(config.output)
    elif resume is not None and in_a_run_folder(resume.path):
        run_dir = resume.run_folder
    else:
        # A checkpoint outside a run folder: the folder it lies in is someone's.
        run_dir = default_run_dir(config)
    refuse_a_folder_among_the_data(config, run_dir)
    # Absolute paths: the checkpoint and config.yaml name the same folders from wherever a re-run starts.
    config = replace(config, output=str(run_dir)).with_absolute_paths()
    resolved = replace(resolved, config=config)
    # Under SLURM or torchrun the other ranks run this at once and wait for rank 0's word before training.
    gate = start_gate()
    if gate is not None:
        gate.next_run()
    if rank_zero_only.rank != 0:
        try:
            resume = continue_from(resume, run_dir, resolved, explicit_resume)  # as rank 0 decides it
            return _train(resolved, run_dir, resume, TrainingStarted(), brief)
        except GenaeError as error:
            # An error every rank meets alike before training is rank 0's to print.
            opened = gate is None or gate.opened or isinstance(error, RankZeroStopped)
            verdict = 0 if opened else gate.verdict()
            if verdict in (0, RANK_ZERO_GONE):
                raise
            raise RankZeroStopped(verdict) from None
    overwrite = config.overwrite
    if (
        not overwrite
        and resume is None
        and started_by_an_earlier_attempt_of_this_job(run_dir, config_file_text(config, run_dir))
    ):
        # Requeued after a kill before the first checkpoint: nothing to resume, so the job begins again.
        overwrite = True
        replacing = "this SLURM job's earlier attempt stopped before its first checkpoint; starting again"
    folder, started = None, TrainingStarted()
    try:
        folder = ClaimedRunFolder.claim(
            run_dir,
            resuming_from=resume.run_folder if resume is not None else None,
            overwrite=overwrite,
            replacing=replacing,
        )
        started = TrainingStarted(on_start=folder.training_started)
        resume = continue_from(resume, run_dir, resolved, explicit_resume)
        if resume is not None and explicit_resume:
            check_steps_left(resume, resolved)
        with stop_outside_training(run_dir, started, undo=folder.undo, resuming=resume is not None):
            return _train(resolved, run_dir, resume, started, brief)
    except BaseException as error:
        if not started.started:
            if folder is not None:
                folder.undo()
            if gate is not None:
                gate.refuse(error)
        raise
    finally:
        if folder is not None:
            folder.release()


def _train(
    resolved: ResolvedRun,
    run_dir: Path,
    resume: RunCheckpoint | None,
    started: TrainingStarted,
    brief: bool = False,
) -> dict[str, Any]:
    config = resolved.config
    wall_clock = RunWallClock()
    steps_per_iteration = resolved.model.module.optimizer_steps_per_iteration
    resume_step = resume.iteration(steps_per_iteration) if resume is not None else None
    # A run stopped during its final evaluation resumes to run that evaluation alone: its last training values
    # and any validation of these weights are taken from metrics.csv rather than logged again.
    logged_at_the_end: dict[str, float] = {}
    evaluates_again = resume is not None and training_complete(resume, config, steps_per_iteration)
    if evaluates_again:
        logged_at_the_end = logged_values(
            run_dir / METRICS_FILE, {resume_step - 1: "train/", resume_step: "val/"}
        )

    pl.seed_everything(int_seed(config.seed, "training"), workers=True, verbose=False)
    datamodule = resolved.build_datamodule()
    family = resolved.model.module
    loggers = build_loggers(config, run_dir, resume_step=resume_step, evaluates_again=evaluates_again)
    callbacks = [*build_callbacks(resolved, run_dir), started, wall_clock]
    seeded_evaluation = next(c for c in callbacks if isinstance(c, SeededEvaluation))
    if resume is not None:
        callbacks.append(LearningRateOnResume())
    trainer = build_trainer(config, family, run_dir, loggers, callbacks)
    prepare_data_early(datamodule, trainer)
    # Training takes full batches only (an evaluation may use any batch size).
    datamodule.check_batch_fits()
    if resume is not None and trainer.is_global_zero:
        resume.check_trained_on(datamodule, "--resume")
    attached = resolved.attach_augmentation(
        datamodule,
        seed=config.seed,
        device=trainer.strategy.root_device,
        accelerator=config.accelerator,
        total_iterations=resolved.total_iterations,
        fast_dev_run=config.fast_dev_run,
    )
    datamodule = attached.datamodule
    augmenter = attached.record.get("augmenter") or {}
    if resume is not None:
        check_same_augmenter(resume, augmenter)
    trainer.callbacks.append(AugmenterInCheckpoints(augmenter))
    # Seeded again, so that every arm of an ablation starts from the same initial weights.
    pl.seed_everything(int_seed(config.seed, "training"), workers=True, verbose=False)
    model = resolved.build_model(
        datamodule.data_shape, attached.discriminator_augmentation, attached.strength
    )
    resolved.check_batch_for(model, trainer.world_size)
    if resume is not None:
        resume.check_fits(model, "--resume", training=True)
    metrics_callback, series_callback, chosen = _add_metric_callbacks(
        config, trainer, model, datamodule, run_dir
    )
    sampling = model.sampling()

    if trainer.is_global_zero:
        _write_run_header(
            config, run_dir, datamodule, attached.discriminator_augmentation, model, trainer, sampling
        )
        if resume is not None:
            say(f"resuming from {resume.path} at iteration {resume_step}")
            say_what_changes(resume, config, run_dir, model)
    for logger in loggers[1:]:
        logger.log_hyperparams(config.to_dict())

    _wait_for_all_ranks()
    fit_started = time.time()
    _fit(trainer, model, datamodule, resume)
    say(describe_training(resume_step or 0, model.iteration, time.time() - fit_started))
    fit_metrics = {**logged_at_the_end, **scalar_metrics(trainer.callback_metrics)}
    trained_at_lr = config.plugin_options.get("lr") if model.lower_learning_rate() is not None else None
    collapse = collapse_warning(fit_metrics, trained_at_lr)
    if collapse is not None:
        say(collapse)
    log_last_training_values(trainer, model, fit_metrics)
    if not config.fast_dev_run:
        trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    # From here a stop signal ends the run at once: the trained weights are saved.
    with stop_during_final_evaluation(run_dir):
        final_metrics = {
            **fit_metrics,
            **final_evaluation(
                trainer,
                model,
                datamodule,
                config.test_split,
                # Training's last step validated these weights, or metrics.csv holds their validation.
                validated=fit_metrics
                if seeded_evaluation.validated_at == trainer.global_step
                or any(key.startswith("val/") for key in logged_at_the_end)
                else None,
            ),
        }
        # Taken before the best checkpoint's evaluation, which the callbacks record as their test stage.
        evaluation = evaluation_records(metrics_callback, series_callback)
        selected = None
        if chosen is not None:
            selected = evaluate_selected_checkpoint(
                trainer, model, datamodule, chosen, final_metrics, config.test_split
            )

        summary = {
            "model": config.model,
            "data": config.data,
            "augment": config.augment,
            "seed": config.seed,
            "global_step": model.iteration,
            "max_steps": config.max_steps,
            "wall_time_s": round(wall_clock.seconds(), 2),
            "final_metrics": final_metrics,
            "headline_metric": model.monitor,
            **({"sampling": sampling} if sampling is not None else {}),
            **({"selected_checkpoint": selected} if selected is not None else {}),
            "evaluation": evaluation,
            **skipped_metrics_record(config.backbone, model),
            "augmentation": attached.final_record(),
            "data_summary": datamodule.summary(),
            # By content: an ablation table compares its rows by it.
            "data_sha256": {split: datamodule.content_sha256(split) for split in SPLITS},
            # A --train-size subset is drawn from this whole training split: its seeds' rows share it.
            **(
                {"training_split_sha256": datamodule.full_training_sha256()}
                if config.train_size is not None
                else {}
            ),
            "checkpoints": sorted(str(path) for path in (run_dir / "checkpoints").glob("*.ckpt")),
            **environment_info(trainer),
            "config": config.to_dict(),
        }
        if trainer.is_global_zero:
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        started.finished = True
    if trainer.is_global_zero:
        headline = test_headline(model.monitor, final_metrics)
        if brief:
            say(format_final_line(final_metrics, headline))
        else:
            table = format_metrics_table(final_metrics, headline)
            say(f"\nfinal metrics (step {summary['global_step']}):\n{table}")
        say(f"run folder: {run_dir}")
    finish_loggers(loggers, final_metrics, selected)
    return summary


def _add_metric_callbacks(
    config: RunConfig,
    trainer: pl.Trainer,
    model: GenerativeModule,
    datamodule: InMemoryDataModule,
    run_dir: Path,
) -> tuple[GenerativeMetrics | None, SequenceMetrics | None, ModelCheckpoint | None]:
    """Add the metric callbacks and best-checkpoint keeper the model and data allow; drop idle ones."""
    metrics_callback, series_callback, chosen = metric_callbacks(
        model, datamodule, run_dir, callback_settings(config)
    )
    callbacks = [*trainer.callbacks, *(c for c in (metrics_callback, series_callback) if c is not None)]
    if chosen is not None:
        # best.ckpt before either saver of last.ckpt: killed between the two saves, a resume weighs that
        # validation's candidate again rather than past it.
        savers = [i for i, c in enumerate(callbacks) if isinstance(c, (PeriodicLastCheckpoint, StopOnSignal))]
        callbacks.insert(savers[0] if savers else len(callbacks), chosen)
    # Lightning calls every callback at every hook, acting or not.
    trainer.callbacks = grouped(applicable(callbacks, model, datamodule))
    return metrics_callback, series_callback, chosen


def config_file_text(config: RunConfig, run_dir: Path) -> str:
    """A run's config.yaml: a first line with the command that re-runs it, then the options."""
    config_file = run_dir.absolute() / CONFIG_FILE
    header = f"{CONFIG_HEADER}; re-run with: {command_prefix()} --config {shlex.quote(str(config_file))}\n"
    return header + config.experiment().to_yaml()


def _write_run_header(
    config: RunConfig,
    run_dir: Path,
    datamodule: InMemoryDataModule,
    discriminator_augmentation: Composed | None,
    model: GenerativeModule,
    trainer: pl.Trainer,
    sampling: str | None,
) -> None:
    """Rank 0: config.yaml, from which the run can be repeated, and what the run is, on the console."""
    (run_dir.absolute() / CONFIG_FILE).write_text(config_file_text(config, run_dir))
    say(f"run folder: {run_dir}  ({datamodule.summary()})")
    if discriminator_augmentation is not None:
        say(f"discriminator inputs: {discriminator_augmentation.description()}")
    say(describe_model(config.model, model, trainer))
    if str(trainer.precision) != config.precision and config.precision != "32":
        say(f"--precision {config.precision} runs as {trainer.precision} here")
    if sampling is not None:
        say(f"sampling: {sampling}")


def _wait_for_all_ranks() -> None:
    """Under SLURM or torchrun, rank 0 opens the start gate once set up and the other ranks wait for it."""
    gate = start_gate()
    if gate is not None:
        if rank_zero_only.rank == 0:
            gate.open()
        else:
            gate.wait()


def _fit(
    trainer: pl.Trainer, model: GenerativeModule, datamodule: InMemoryDataModule, resume: RunCheckpoint | None
) -> None:
    """`trainer.fit`, from the resumed checkpoint if any."""
    with warnings.catch_warnings():
        # A checkpoint resumed from another folder: `say_what_changes` says so.
        warnings.filterwarnings("ignore", message=".*dirpath has changed")
        trainer.fit(
            model,
            datamodule=datamodule,
            ckpt_path=str(resume.path) if resume is not None else None,
            # Tensors and plain values only: resuming never runs code from the checkpoint file.
            weights_only=True,
        )

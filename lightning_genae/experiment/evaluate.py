"""Evaluation: a run's final validation and test pass, and `--evaluate(-folder)`, writing eval.json."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_genae import api
from lightning_genae.api import (
    evaluation_records,
    score_images,
    sequence_metrics,
    skipped_metrics_record,
)
from lightning_genae.cache import write_file_atomically
from lightning_genae.callbacks.applicability import applicable
from lightning_genae.callbacks.metrics import RepresentationMetrics
from lightning_genae.callbacks.overfitting import DiscriminatorOverfitting
from lightning_genae.callbacks.progress_bar import IterationProgressBar
from lightning_genae.callbacks.random_state import SeededEvaluation
from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.cluster import global_rank
from lightning_genae.datamodules import DATASETS, InMemoryDataModule
from lightning_genae.datamodules.folder import scan_folder
from lightning_genae.datamodules.imagefiles import read_images
from lightning_genae.errors import ConfigError, DataError, RunFolderRefused, agree
from lightning_genae.experiment.config import RunConfig
from lightning_genae.experiment.resolve import (
    ResolvedRun,
    named_options,
    refuse_a_folder_among_the_data,
    resolve,
)
from lightning_genae.experiment.run_folder import read_json_object
from lightning_genae.experiment.run_lock import RunFolderLock
from lightning_genae.experiment.trainer import (
    callback_settings,
    environment_info,
    format_metrics_table,
    hardware_trainer,
    prepare_data_early,
    scalar_metrics,
)
from lightning_genae.metrics.backbones import BackboneUnavailable
from lightning_genae.metrics.distances import MIN_FEATURE_SAMPLES
from lightning_genae.metrics.names import BACKBONES, frechet_distance_name, test_headline
from lightning_genae.models import GenerativeModule
from lightning_genae.models.base import SOURCE_KEY
from lightning_genae.progress import say
from lightning_genae.run_files import started_run_files
from lightning_genae.source import other_source_note

# What `--evaluate-folder` reads: the dataset to compare with, the sample count, where the result goes.
FOLDER_EVALUATION_OPTIONS = (
    "data",
    "backbone",
    "data_dir",
    "image_size",
    "channels",
    "eval_samples",
    "inception_weights",
    "classifier_weights",
    "output",
    "overwrite",
    "seed",
    "accelerator",
)
# What a re-evaluation may change; everything else comes from the checkpoint, so the data and model match.
EVALUATION_OPTIONS = (
    # A run's data is compared by content, so a choice that reads its CSV file otherwise is refused.
    "csv_channels",
    "eval_samples",
    "backbone",
    "inception_weights",
    "classifier_weights",
    "data_dir",
    "output",
    "overwrite",
    "batch_size",
    "accelerator",
    "devices",
    "strategy",
    "num_nodes",
    "precision",
    "num_workers",
    "threads",
)


EVAL_FILE = "eval.json"


def claim_eval_output(output: Path, overwrite: bool, own_run: Path | None = None) -> Path:
    """Where eval.json goes, checked first: never among another run's files (but `own_run`'s), never over a
    file an evaluation did not write, nor over an evaluation without --overwrite."""
    found = started_run_files(output)
    path = output / EVAL_FILE
    # What --evaluate and --evaluate-folder write: a JSON object naming the data, with its metrics.
    earlier = read_json_object(path) or {}
    if found and (own_run is None or output.resolve() != own_run.resolve()):
        refusal = f"--output {output} holds a run ({', '.join(found[:2])}); give a folder of its own"
    elif path.exists() and not ("data" in earlier and isinstance(earlier.get("metrics"), dict)):
        refusal = f"{path} holds a file no evaluation wrote; give --output DIR"
    elif path.exists() and not overwrite:
        refusal = f"{path} holds an earlier evaluation; give --overwrite to replace it, or --output DIR"
    else:
        return path
    raise RunFolderRefused(refusal)


# Below this many images a side, a folder's scores get a word on their sample size.
FEW_IMAGES = 100


def final_evaluation(
    trainer: pl.Trainer,
    model: GenerativeModule,
    datamodule: InMemoryDataModule,
    test_split: bool = True,
    validated: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Seeded validation and test metrics of the model as it is (`validated`: its validation, reused)."""
    metrics: dict[str, float] = {}
    if validated is not None:
        metrics.update({name: value for name, value in validated.items() if name.startswith("val/")})
    else:
        for result in trainer.validate(model, datamodule=datamodule, verbose=False):
            metrics.update(scalar_metrics(result))
    if test_split:
        for result in trainer.test(model, datamodule=datamodule, verbose=False):
            metrics.update(scalar_metrics(result))
    return metrics


def evaluate_selected_checkpoint(
    trainer: pl.Trainer,
    model: GenerativeModule,
    datamodule: InMemoryDataModule,
    chosen: ModelCheckpoint,
    final_metrics: dict[str, float],
    test_split: bool = True,
) -> dict[str, Any]:
    """Test metrics of the checkpoint `chosen` on validation, unlogged; the final weights put back."""
    monitor = chosen.monitor
    record: dict[str, Any] = {"path": chosen.best_model_path or None, "chosen_on": monitor}
    if not chosen.best_model_path:
        record["note"] = "no validation ran during training, so no checkpoint was chosen"
        return record
    checkpoint = RunCheckpoint.load(chosen.best_model_path, "the best checkpoint")
    record["step"] = checkpoint.iteration(model.optimizer_steps_per_iteration)
    if chosen.best_model_score is not None:
        record[monitor] = float(chosen.best_model_score)
    if not test_split:
        record["note"] = "the run is kept off the test split (--no-test-split), so it was not evaluated there"
        return record
    test_only = {name: value for name, value in final_metrics.items() if name.startswith("test/")}
    if record["step"] == model.iteration:
        record["test_metrics"] = test_only
        record["note"] = "the best checkpoint holds the final weights; their test metrics are not recomputed"
        return record
    say(f"checkpoint chosen on {monitor}: step {record['step']}; evaluating it on the test split")
    # Kept in host memory: the device holds one copy of the weights at a time.
    final_weights = {
        name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()
    }
    loggers, trainer.loggers = trainer.loggers, []
    try:
        model.load_state_dict(checkpoint.contents["state_dict"])
        metrics = final_evaluation(trainer, model, datamodule)
    finally:
        trainer.loggers = loggers
        model.load_state_dict(final_weights)
    record["test_metrics"] = {name: value for name, value in metrics.items() if name.startswith("test/")}
    return record


def evaluate_checkpoint(checkpoint_path: str, options: dict[str, Any]) -> dict[str, Any]:
    """Re-run a saved run's final validation and test evaluation into eval.json (`options`: those typed)."""
    checkpoint = RunCheckpoint.load(checkpoint_path, "--evaluate")
    stored = checkpoint.stored_config("--evaluate")
    resolved = resolve(RunConfig.from_dict({**stored, **options}), named=named_options(options))
    output = Path(options["output"]) if options.get("output") else checkpoint.run_folder
    eval_file = claim_eval_output(output, resolved.config.overwrite, checkpoint.run_folder)
    # The run's own folder is locked while it is scored: no run trains or starts there meanwhile, beside
    # which these numbers would be written.
    in_its_run = eval_file.parent.resolve() == checkpoint.run_folder.resolve()
    lock = RunFolderLock.acquire(checkpoint.run_folder) if in_its_run and global_rank() == 0 else None
    try:
        return _scored(checkpoint, resolved, eval_file)
    finally:
        if lock is not None:
            lock.release()


def _scored(checkpoint: RunCheckpoint, resolved: ResolvedRun, eval_file: Path) -> dict[str, Any]:
    config = resolved.config
    if note := other_source_note(checkpoint.contents.get(SOURCE_KEY), str(checkpoint.path)):
        say(f"{note} than the run's own")
    datamodule = resolved.build_datamodule()
    model = checkpoint.restore(resolved.model.module, "--evaluate")
    trainer = hardware_trainer(
        config,
        type(model),
        logger=False,
        enable_checkpointing=False,
        callbacks=[IterationProgressBar("evaluating")],
    )
    prepare_data_early(datamodule, trainer)
    checkpoint.check_trained_on(datamodule, "--evaluate")
    metrics_callback = api.generative_metrics(model, datamodule, callback_settings(config))
    representation = [RepresentationMetrics(seed=config.seed), DiscriminatorOverfitting(seed=config.seed)]
    series_callback = sequence_metrics(model, datamodule, callback_settings(config))
    trainer.callbacks += [SeededEvaluation(config.seed), *applicable(representation, model, datamodule)]
    trainer.callbacks += [c for c in (metrics_callback, series_callback) if c is not None]
    if not config.test_split:
        say("evaluated on the validation split: the run is kept off the test split (--no-test-split)")
    metrics = final_evaluation(trainer, model, datamodule, config.test_split)
    result = {
        "checkpoint": str(checkpoint.path),
        "model": config.model,
        "data": config.data,
        "global_step": checkpoint.iteration(resolved.model.module.optimizer_steps_per_iteration),
        "seed": config.seed,
        "metrics": metrics,
        "evaluation": evaluation_records(metrics_callback, series_callback),
        **skipped_metrics_record(config.backbone, model),
        "data_summary": datamodule.summary(),
        **environment_info(trainer),
    }
    if trainer.is_global_zero:
        write_file_atomically(eval_file, json.dumps(result, indent=2) + "\n")
        table = format_metrics_table(metrics, test_headline(model.monitor, metrics))
        say(f"\n{table}\nwrote {eval_file}")
    return result


def evaluate_folder(folder: str, options: dict[str, Any], file_values: dict[str, Any]) -> dict[str, Any]:
    """Score a folder of images against a dataset's test split with every backbone (or the one typed)."""
    if "output" not in options:
        raise ConfigError("--evaluate-folder needs --output DIR for eval.json")
    chosen = options.get("backbone")
    read = {
        key: value
        for key, value in file_values.items()
        if key in FOLDER_EVALUATION_OPTIONS and key != "backbone"
    }
    merged = RunConfig.from_dict({**read, **options})
    kind = DATASETS[merged.data].data_kind if merged.data in DATASETS else "image"
    if kind != "image":
        raise ConfigError(
            f"--evaluate-folder scores images, and --data {merged.data} is {kind} data; give an image --data"
        )
    if chosen is None and merged.inception_weights is not None:
        # Every backbone is scored, Inception with the weights given: resolve checks them as its own.
        merged = replace(merged, backbone="inception")
    resolved = resolve(merged)
    config = resolved.config
    refuse_a_folder_among_the_data(config, folder, scored=True)
    paths = scan_folder(Path(folder)).paths
    eval_file = claim_eval_output(Path(options["output"]), config.overwrite)
    datamodule = resolved.build_datamodule()
    datamodule.prepare_data()
    datamodule.setup("test")
    if len(paths) < MIN_FEATURE_SAMPLES:
        raise DataError(
            f"--evaluate-folder {folder} holds {len(paths)} {agree(paths, 'image', 'images')}; the "
            f"k-nearest-neighbour metrics need at least {MIN_FEATURE_SAMPLES}: add images"
        )
    channels, size, _ = datamodule.image_shape
    images = read_images(paths, size, channels)
    device = torch.device("cuda" if torch.cuda.is_available() and config.accelerator != "cpu" else "cpu")
    result: dict[str, Any] = {
        "folder": os.path.abspath(folder),
        "n_images": len(images),
        "data": config.data,
        "split": "test",
        "seed": config.seed,
        "eval_samples": config.eval_samples,
        "device": device.type,
        "metrics": {},
        "backbones": {},
        "skipped": {},
    }
    for name in [chosen] if chosen is not None else BACKBONES:
        try:
            score = score_images(
                images,
                datamodule,
                backbone=name,
                inception_weights=config.inception_weights,
                classifier_weights=config.classifier_weights,
                num_samples=config.eval_samples,
                seed=config.seed,
                device=device,
            )
        except BackboneUnavailable as error:
            named = {"classifier": config.classifier_weights, "inception": config.inception_weights}
            if named.get(name) is not None or chosen is not None:
                raise  # a backbone the user named
            result["skipped"][name] = str(error)
            say(f"{name} metrics skipped: {str(error).removeprefix(f'{name}: ')}")
            continue
        result["metrics"].update(score.values)
        result["backbones"][name] = {
            "description": score.backbone,
            "n_real": score.n_real,
            "n_fake": score.n_fake,
        }
        line = f"{name}: {score.n_fake} generated vs {score.n_real} real test images, {score.backbone}"
        if score.n_fake < len(images):
            tested = datamodule.split_size("test")
            line += (
                f"; a seeded {score.n_fake} of the folder's {len(images)} images, as both sides take "
                f"min(--eval-samples {config.eval_samples}, the test split's {tested}, the folder's)"
            )
        if score.n_fake < FEW_IMAGES:
            line += "; at so few images FD is biased upward: compare only with figures of the same N"
        say(line)
    if not result["metrics"]:
        raise ConfigError(
            f"--evaluate-folder: no feature backbone available ({'; '.join(result['skipped'].values())})"
        )
    write_file_atomically(eval_file, json.dumps(result, indent=2) + "\n")
    table = format_metrics_table(result["metrics"], frechet_distance_name(result["metrics"], None))
    say(f"\n{table}\nwrote {eval_file}")
    return result

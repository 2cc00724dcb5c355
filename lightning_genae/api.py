"""The Python API: a run's callbacks for your own `pl.Trainer`, a saved run's model, the scores of images."""

from __future__ import annotations

import operator
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from lightning_genae.callbacks.applicability import applicable
from lightning_genae.callbacks.checkpoints import BestCheckpoint, PeriodicLastCheckpoint, StoreRunConfig
from lightning_genae.callbacks.images import (
    AugmentationPreview,
    DiscriminatorReconstructionGrid,
    InterpolationGrid,
    ReconstructionGrid,
    SampleGrid,
)
from lightning_genae.callbacks.metrics import GenerativeMetrics, RepresentationMetrics
from lightning_genae.callbacks.overfitting import DiscriminatorOverfitting
from lightning_genae.callbacks.random_state import RandomStateInCheckpoints, SeededEvaluation
from lightning_genae.callbacks.sequence_metrics import SequenceMetrics, build_sequence_metrics
from lightning_genae.callbacks.sequences import SaveNormaliser
from lightning_genae.callbacks.stopping import StopOnSignal
from lightning_genae.callbacks.training import (
    DivergenceGuard,
    RunFolderPresence,
    SeedPerRank,
    ValidateLastIteration,
    WritesUnder,
)
from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.datamodules import ImageDataModule, InMemoryDataModule
from lightning_genae.errors import DataError
from lightning_genae.metrics.backbones import (
    BackboneUnavailable,
    FeatureBackbone,
    check_classifier_trainable,
    load_backbone,
)
from lightning_genae.metrics.distances import MIN_FEATURE_SAMPLES
from lightning_genae.metrics.generative import (
    GenerativeScore,
    RealFeatures,
    extract_features,
    score_generated,
    seeded_subset,
)
from lightning_genae.metrics.names import BACKBONES, NO_BACKBONE, headline_metric
from lightning_genae.metrics.sequence_classifier import SEQUENCE_DATASETS
from lightning_genae.models import MODELS, GenerativeModule, Sampler
from lightning_genae.progress import say
from lightning_genae.run_files import CHECKPOINT_DIR, last_checkpoint
from lightning_genae.seeding import int_seed


@dataclass(frozen=True)
class CallbackSettings:
    """What a run's callbacks read (cadences in training iterations); the defaults are `run.py`'s."""

    image_every: int = 500
    ckpt_every: int = 500
    # Iterations between two checks of the losses.
    log_every: int = 10
    seed: int = 0
    precision: str = "32-true"
    eval_samples: int = 10_000
    backbone: str = "classifier"
    inception_weights: str | None = None
    classifier_weights: str | None = None
    # A set-up check (`--fast-dev-run`): no checkpoint and no best checkpoint.
    fast_dev_run: bool = False


def run_callbacks(
    family: type[GenerativeModule],
    run_dir: Path,
    settings: CallbackSettings,
    *,
    configuration: dict[str, Any],
    continue_with: str,
    discriminator_side: bool | None = None,
) -> list[Callback]:
    """Every run's callbacks, and (unless a set-up check) checkpoints holding `configuration`.
    `discriminator_side`: None without an augmentation; `continue_with`: how a stopped run continues."""
    every, seed = settings.image_every, settings.seed
    callbacks: list[Callback] = [
        DivergenceGuard(
            None if settings.fast_dev_run else run_dir / CHECKPOINT_DIR,
            check_every=(settings.log_every, every),
            precision=settings.precision,
        ),
        # Before every callback that draws at a validation's start.
        SeededEvaluation(seed),
        ValidateLastIteration(),
        SampleGrid(every_n_steps=every, seed=seed),
        ReconstructionGrid(every_n_steps=every),
        InterpolationGrid(every_n_steps=every, seed=seed),
        DiscriminatorReconstructionGrid(every_n_steps=every, seed=seed),
        SaveNormaliser(),
        RepresentationMetrics(seed=seed),
        DiscriminatorOverfitting(seed=seed),
        SeedPerRank(seed),
    ]
    if discriminator_side is not None:
        callbacks.append(AugmentationPreview(seed=seed, discriminator_side=discriminator_side))
    if settings.fast_dev_run:
        # A set-up check: its weights are worthless and must not look like a run to resume.
        return callbacks
    return [
        *callbacks,
        RunFolderPresence(run_dir, continue_with),
        StoreRunConfig(configuration),
        RandomStateInCheckpoints(),
        PeriodicLastCheckpoint(
            dirpath=run_dir / CHECKPOINT_DIR,
            every_n_train_steps=settings.ckpt_every * family.optimizer_steps_per_iteration,
            save_top_k=0,
            save_last=True,
            # Always last.ckpt, the file --resume last reads, never last-v1.ckpt beside a taken one.
            enable_version_counter=False,
        ),
        # Ctrl-C, SIGTERM and SLURM's warning signal save last.ckpt at an iteration boundary and stop.
        StopOnSignal(last_checkpoint(run_dir), continue_with),
    ]


def metric_callbacks(
    model: GenerativeModule, datamodule: InMemoryDataModule, run_dir: Path, settings: CallbackSettings
) -> tuple[GenerativeMetrics | None, SequenceMetrics | None, ModelCheckpoint | None]:
    """The metric callbacks the model and data allow, and the best checkpoint's keeper (monitoring the image
    metric's headline for a family with no validation objective)."""
    metrics_callback = generative_metrics(model, datamodule, settings)
    if metrics_callback is not None and model.monitor is None:
        model.monitor = headline_metric(metrics_callback.backbone.name)
    series_callback = sequence_metrics(model, datamodule, settings)
    chosen = None
    if model.monitor is not None and not settings.fast_dev_run:
        chosen = BestCheckpoint(run_dir / CHECKPOINT_DIR, model.monitor)
    return metrics_callback, series_callback, chosen


def generative_metrics(
    model: GenerativeModule, datamodule: InMemoryDataModule, settings: CallbackSettings
) -> GenerativeMetrics | None:
    """The image metric callback for models that sample images; None, said, when the default classifier
    cannot be had (unlabelled data). A backbone or weights the caller chose must work."""
    if not isinstance(model, Sampler) or datamodule.data_kind != "image" or settings.backbone == NO_BACKBONE:
        return None
    # A classifier trained on first use learns from the real data, never an augmented wrapper's.
    real_data = getattr(datamodule, "base", datamodule)
    chosen = settings.backbone == "inception" or settings.classifier_weights is not None
    try:
        if not chosen:
            # Decided by the data's labels alone, before the splits are checked and anything is trained.
            check_classifier_trainable(real_data.name, real_data)
        # Before a classifier is trained for a run that could not use it.
        for split in ("val", "test"):
            check_split_scorable(
                datamodule, split, "give more images, or train without image metrics (backbone none)"
            )
        backbone = load_backbone(
            settings.backbone,
            real_data.name,
            real_data,
            inception_weights=settings.inception_weights,
            classifier_weights=settings.classifier_weights,
        )
    except BackboneUnavailable as error:
        if chosen:
            raise
        say(f"generative metrics skipped: {error}")
        model.image_metrics_skipped = str(error)
        return None
    if settings.classifier_weights is not None:
        say(f"image metrics: features of the {backbone.description}")
    return GenerativeMetrics(backbone, num_samples=settings.eval_samples, seed=settings.seed)


def sequence_metrics(
    model: GenerativeModule, datamodule: InMemoryDataModule, settings: CallbackSettings
) -> SequenceMetrics | None:
    """The series metric callback (discriminative_quick, predictive_quick, smnist FD); None for images."""
    with_features = settings.backbone != NO_BACKBONE
    callback = build_sequence_metrics(
        model,
        datamodule,
        num_samples=settings.eval_samples,
        seed=settings.seed,
        feature_metrics=with_features,
    )
    if callback is not None and with_features and datamodule.name not in SEQUENCE_DATASETS:
        # Said and recorded as an image run's skipped metrics are: a missing fd_classifier is not silent.
        shipped = ", ".join(SEQUENCE_DATASETS)
        why = f"{datamodule.name} has no sequence feature classifier (one is shipped for {shipped}); "
        why += "the sequence scores are measured without it"
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


def skipped_metrics_record(backbone: str, model: GenerativeModule) -> dict[str, Any]:
    """`{"skipped": {backbone: why}}` where the image metrics were left out; empty otherwise."""
    if model.image_metrics_skipped is None:
        return {}
    return {"skipped": {backbone: model.image_metrics_skipped}}


def family_name(model: GenerativeModule) -> str:
    """The registry name of `model`'s family: its class's, else its nearest registered base's."""
    names = {spec.module: name for name, spec in reversed(MODELS.items())}
    for klass in type(model).__mro__:
        if klass in names:
            return names[klass]
    raise TypeError(f"{type(model).__name__} is not a lightning-genae family; use one of {', '.join(MODELS)}")


# CallbackSettings' fields a checkpoint of `callbacks_for` does not record: the caller's Trainer sets them.
_NOT_RECORDED = ("log_every", "precision", "fast_dev_run")


def callbacks_for(
    model: GenerativeModule,
    datamodule: InMemoryDataModule,
    output_dir: str | Path,
    *,
    every_n_steps: int = CallbackSettings.image_every,
    checkpoint_every: int = CallbackSettings.ckpt_every,
    seed: int = 0,
    metrics: bool = True,
    eval_samples: int = CallbackSettings.eval_samples,
    backbone: str = CallbackSettings.backbone,
    inception_weights: str | Path | None = None,
    classifier_weights: str | Path | None = None,
) -> list[Callback]:
    """The callbacks a `run.py` run gets, for a `pl.Trainer` of your own with `default_root_dir=output_dir`:
    grids, the divergence guard, `last.ckpt`, and with `metrics` the generative metrics and `best.ckpt`."""
    for name, value, least in (
        ("every_n_steps", every_n_steps, 1),
        ("checkpoint_every", checkpoint_every, 1),
        ("eval_samples", eval_samples, MIN_FEATURE_SAMPLES),
    ):
        if value < least:
            raise ValueError(f"{name} must be at least {least}, got {value}")
    run_dir = Path(output_dir)
    settings = CallbackSettings(
        image_every=every_n_steps,
        ckpt_every=checkpoint_every,
        seed=seed,
        eval_samples=eval_samples,
        backbone=backbone,
        inception_weights=None if inception_weights is None else str(inception_weights),
        classifier_weights=None if classifier_weights is None else str(classifier_weights),
    )
    # What a run's checkpoint records of its run; the rest of a run's options are the caller's.
    configuration = {
        "model": family_name(model),
        "data": datamodule.name,
        **{key: value for key, value in asdict(settings).items() if key not in _NOT_RECORDED},
    }
    # run.py cannot rebuild this run (its data and model options are the caller's): the Trainer can.
    last = str(last_checkpoint(run_dir).resolve())
    resume = f"trainer.fit(model, datamodule=..., ckpt_path={last!r}) with the same model, data, Trainer"
    callbacks = [
        WritesUnder(run_dir),
        *run_callbacks(type(model), run_dir, settings, configuration=configuration, continue_with=resume),
    ]
    if metrics:
        callbacks += [c for c in metric_callbacks(model, datamodule, run_dir, settings) if c is not None]
    return applicable(callbacks, model, datamodule)


def load_model(checkpoint: str | Path) -> GenerativeModule:
    """The model a `run.py` run saved (`last.ckpt`, `best.ckpt`), in eval mode on the CPU, read safely; a
    plug-in's family is found as `MODELS` finds any name it lacks, by loading the plug-ins."""
    saved = RunCheckpoint.load(checkpoint, "load_model")
    family = saved.stored_config("load_model").get("model")
    # Rebuilt from the hyper-parameters; the initial weights it draws must not move the global random state.
    with torch.random.fork_rng(devices=[]):
        return saved.restore(MODELS[family].module, "load_model")


def trainer_kwargs(
    model: GenerativeModule | type[GenerativeModule], iterations: int, eval_every: int | None = None
) -> dict[str, Any]:
    """`pl.Trainer` arguments for `iterations` iterations of `model`'s family (`max_steps` counts optimizer
    steps, several per adversarial iteration), validating every `eval_every` iterations."""
    iterations = operator.index(iterations)
    if iterations < 1 or (eval_every is not None and operator.index(eval_every) < 1):
        raise ValueError(f"iterations and eval_every must be >= 1, got {iterations} and {eval_every}")
    kwargs: dict[str, Any] = {
        "max_steps": iterations * model.optimizer_steps_per_iteration,
        "max_epochs": None,
    }
    if eval_every is not None:
        kwargs.update(validation_every(eval_every))
    return kwargs


def validation_every(iterations: int) -> dict[str, Any]:
    """`pl.Trainer` arguments that validate every `iterations` training batches, across epoch boundaries."""
    return {"val_check_interval": iterations, "check_val_every_n_epoch": None}


def check_split_scorable(
    datamodule: InMemoryDataModule, split: str, fix: str = "give data with more images"
) -> None:
    """Refuse a real split too small for the k-nearest-neighbour metrics."""
    real = datamodule.split_size(split)
    if real < MIN_FEATURE_SAMPLES:
        raise DataError(
            f"the {split} split of {datamodule.name}, which holds {real} images, is too small: the "
            f"k-nearest-neighbour metrics need at least {MIN_FEATURE_SAMPLES}; {fix}"
        )


def score_images(
    images: torch.Tensor,
    datamodule: ImageDataModule,
    *,
    split: str = "test",
    backbone: str | FeatureBackbone = "classifier",
    inception_weights: str | Path | None = None,
    classifier_weights: str | Path | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> GenerativeScore:
    """FD, KID, precision/recall and density/coverage of `images` (uint8, or floats in [-1, 1]) against as
    many of `split` (at most `num_samples`): the real ones fixed, the given ones drawn by `seed`."""
    if not isinstance(backbone, str) and backbone.name not in BACKBONES:
        raise ValueError(
            f"the backbone is named {backbone.name!r}; it must be named {' or '.join(BACKBONES)}"
        )
    if tuple(images.shape[1:]) != tuple(datamodule.image_shape):
        shape = ", ".join(map(str, datamodule.image_shape))
        raise ValueError(f"images of shape {tuple(images.shape)}, {datamodule.name}'s are [N, {shape}]")
    # Too few to score is refused by the metrics themselves, naming the count needed.
    count = min(len(images), num_samples or len(images))
    if images.dtype != torch.uint8:
        images = _stored_images(images.detach().cpu(), datamodule)
    # Building a backbone draws initial weights: the global random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        datamodule.prepare_data()
        datamodule.setup("test")
        check_split_scorable(datamodule, split)
        if isinstance(backbone, str):
            backbone = load_backbone(
                backbone,
                datamodule.name,
                datamodule,
                inception_weights=inception_weights,
                classifier_weights=classifier_weights,
            )
        return score_generated(
            RealFeatures(backbone),
            datamodule,
            split,
            # Its own stream, not the real subset's: the split's own images given would be cut to the very
            # images they are compared with.
            lambda n: extract_features(
                backbone, images[seeded_subset(len(images), n, int_seed(seed, "scored images"))], device
            ),
            num_samples=count,
            device=torch.device(device),
        )


def _stored_images(images: torch.Tensor, datamodule: ImageDataModule) -> torch.Tensor:
    """Float images in [-1, 1] as stored (uint8). NaN, Inf and another scale are refused (stored, they would
    be other images); a small overshoot is clamped; images in [0, 1] are warned about."""
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    low, high = float(images.min()), float(images.max())
    outside = float(((images < -1.05) | (images > 1.05)).float().mean())
    if not bool(finite.all()):
        raise ValueError(f"{int((~finite).sum())} of the {len(images)} images hold NaN or Inf")
    if outside > 0.01:
        raise ValueError(
            f"the images span [{low:.3g}, {high:.3g}], {outside:.1%} of their values outside [-1, 1]; "
            "give uint8 images, or floats in [-1, 1]"
        )
    if low >= 0.0 and high <= 1.0:
        warnings.warn(f"the images lie in [{low:.3g}, {high:.3g}]; floats are read in [-1, 1]", stacklevel=3)
    return datamodule.to_stored(images)

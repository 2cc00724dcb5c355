"""The run's augmenter autoencoder: the checkpoint `--augment-ckpt` names, the cached one, or one trained now
on the run's own training split (the same `--train-size` subset, never more data) with a short Lightning run
of its own and cached, so an ablation grid trains it once.

The cache is keyed by what the augmenter depends on, the training split by content among it: replacing
images in place is a miss."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import LightningEnvironment
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger

from lightning_genae.augmentation import AugmentPlan
from lightning_genae.cache import cache_root, file_sha256, state_sha256, write_atomically
from lightning_genae.callbacks.checkpoints import StoreRunConfig
from lightning_genae.callbacks.progress_bar import IterationProgressBar
from lightning_genae.checkpoint import CONFIG_KEY, RunCheckpoint
from lightning_genae.cluster import RunInterrupted, created_by_local_rank_zero, file_identity
from lightning_genae.datamodules import InMemoryDataModule, dataset_options
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.config import RunConfig
from lightning_genae.models import MODELS, GenerativeModule
from lightning_genae.progress import say
from lightning_genae.seeding import int_seed

# Part of the cache key: bump when the augmenter's training recipe changes, so stale caches are retrained.
RECIPE_VERSION = 2


AUGMENTER_BATCH = 64


AUGMENTER_LR = 1e-3


def augmenter_batch_size(datamodule: InMemoryDataModule) -> int:
    """AUGMENTER_BATCH, or the whole training split where it holds fewer items: the augmenter trains on full
    batches, and a split that small is the run's data as given (the run's --batch-size already fits it)."""
    return min(AUGMENTER_BATCH, len(datamodule.split_tensors("train")[0]))


def augmenter_lr(family: str) -> float:
    """AUGMENTER_LR, a fast rate for a short reconstruction run; an adversarial family (vaegan, aae) keeps its
    own default, which is set for its game between networks."""
    module_type = MODELS[family].module
    return module_type.options_type().lr if module_type.adversarial else AUGMENTER_LR


def autoencoder_families() -> list[str]:
    """The registered families that are autoencoders, so their checkpoints can serve as augmenters."""
    return [
        name
        for name, spec in MODELS.items()
        if all(callable(getattr(spec.module, method, None)) for method in ("encode", "decode", "reconstruct"))
    ]


def default_cache_dir() -> Path:
    """$GENAE_CACHE_DIR/augmenters (~/.cache/lightning-genae/augmenters)."""
    return cache_root() / "augmenters"


def augmenter_identity(plan: AugmentPlan, datamodule: InMemoryDataModule, seed: int) -> dict[str, Any]:
    """Everything a trained augmenter depends on; its hash names the cache file.

    The data enters by content (the training split's SHA-256, which covers the --train-size subset, a
    folder's images and how series are cut), never by name or path: replacing images in place is a miss.
    """
    return {
        "recipe": RECIPE_VERSION,
        "family": plan.augmenter_family,
        "train_sha256": datamodule.content_sha256("train"),
        "seed": seed,
        "steps": plan.augmenter_steps,
        "width": plan.augmenter_width,
        "latent_dim": plan.augmenter_latent_dim,
        "batch_size": augmenter_batch_size(datamodule),
        "lr": augmenter_lr(plan.augmenter_family),
    }


def cache_path(plan: AugmentPlan, datamodule: InMemoryDataModule, seed: int, cache_dir: Path | None) -> Path:
    identity = augmenter_identity(plan, datamodule, seed)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    size = "full" if datamodule.train_size is None else str(datamodule.train_size)
    # Dataset, subset and seed are in the name for people reading the folder; the digest alone decides.
    name = f"{datamodule.name}-{plan.augmenter_family}-ts{size}-seed{seed}-{digest}.ckpt"
    return (cache_dir or default_cache_dir()) / name


def _load_module(checkpoint: RunCheckpoint, flag: str) -> tuple[GenerativeModule, dict[str, Any]]:
    stored = checkpoint.contents.get(CONFIG_KEY) or {}
    family = stored.get("model")
    if family not in autoencoder_families():
        raise ConfigError(
            f"{flag}: {checkpoint.path} holds a {family or 'non-lightning-genae'} model, not an autoencoder; "
            f"pass the checkpoint of a run.py --model {'/'.join(autoencoder_families())} run"
        )
    return checkpoint.restore(MODELS[family].module, flag), stored


def _training_images(train_size: int | None) -> str:
    return "the whole training split" if train_size is None else f"a --train-size {train_size} subset"


def _check_given_checkpoint(
    checkpoint: RunCheckpoint, stored: dict[str, Any], datamodule: InMemoryDataModule, seed: int
) -> None:
    """A given augmenter must have seen the run's training data and no more: the same training split,
    compared by content; the configuration it records only explains a difference."""
    trained = checkpoint.training_data_sha256()
    current = datamodule.content_sha256("train")
    if trained == current:
        return
    problems = []
    if trained is None:
        problems.append("it records no hash of the data it was trained on (written by an older version)")
    elif stored.get("data") != datamodule.name:
        problems.append(f"it was trained on {stored.get('data')}, this run uses {datamodule.name}")
    elif stored.get("train_size") != datamodule.train_size:
        problems.append(
            f"it was trained on {_training_images(stored.get('train_size'))}, "
            f"this run on {_training_images(datamodule.train_size)}"
        )
    elif datamodule.train_size is not None and stored.get("seed") != seed:
        problems.append(
            f"its --train-size subset was drawn with seed {stored.get('seed')}, this run's with {seed}"
        )
    else:
        problems.append(
            f"its training {datamodule.item_noun} differ from this run's (SHA-256 {trained[:12]}, now "
            f"{current[:12]}: were the files replaced?)"
        )
    raise ConfigError(
        f"--augment-ckpt {checkpoint.path}: {'; '.join(problems)}; train the augmenter on the same data "
        "(or drop --augment-ckpt to have it trained and cached)"
    )


def _cached_augmenter(
    path: Path, datamodule: InMemoryDataModule, plan: AugmentPlan, seed: int
) -> tuple[GenerativeModule, dict[str, Any]] | None:
    """The augmenter cached at `path`, or None (with a one-line notice) when it must be trained again.

    A cache file is this program's own: one that cannot be read safely, holds something else, was trained
    on other data or records another recipe than the one its name was computed from (a file copied over
    another) is replaced, never reported as a bad --augment-ckpt the user did not pass.
    """
    try:
        checkpoint = RunCheckpoint.load(path, "augmenter cache")
        module, stored = _load_module(checkpoint, "augmenter cache")
    except ConfigError:
        say(f"augmenter: the cached {path} is unreadable or not an augmenter; training it again")
        return None
    if checkpoint.training_data_sha256() != datamodule.content_sha256("train"):
        say(f"augmenter: the cached {path} was trained on other data; training it again")
        return None
    differences = _recipe_differences(stored, module, plan, datamodule, seed)
    if differences:
        say(f"augmenter: the cached {path} records {', '.join(differences)}; training it again")
        return None
    return module, stored


def _recipe_differences(
    stored: dict[str, Any],
    module: GenerativeModule,
    plan: AugmentPlan,
    datamodule: InMemoryDataModule,
    seed: int,
) -> list[str]:
    """What the augmenter at a cache path records that differs from the recipe the path was named after
    (`augmenter_identity`), as `name X where Y was asked`."""
    asked = {
        "model": plan.augmenter_family,
        "seed": seed,
        "max_steps": plan.augmenter_steps,
        "batch_size": augmenter_batch_size(datamodule),
        "lr": augmenter_lr(plan.augmenter_family),
        "latent_dim": plan.augmenter_latent_dim,
        type(module).width_option: plan.augmenter_width,
    }
    recorded = {**stored, "latent_dim": module.latent_dim, **dict(module.hparams)}
    return [
        f"{name} {recorded.get(name)!r} where {value!r} was asked"
        for name, value in asked.items()
        if value is not None and recorded.get(name) != value
    ]


class _StopAugmenterOnSignal(Callback):
    """Ctrl-C or SIGTERM while the augmenter trains: stop at the next iteration with exit 128 + signal.

    Lightning's own handling of Ctrl-C ends the process with exit code 1 from inside `fit`, which reads as
    a failure and leaves the augmenter's half-written cache entry behind. Here the signal is noted, the
    training stops after the iteration in progress, `cleanup` removes what this training wrote, and
    RunInterrupted carries the exit code (130 for Ctrl-C). A second Ctrl-C stops at once.
    """

    def __init__(self, cleanup: Callable[[], None]) -> None:
        self.cleanup = cleanup
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning's signal connector registered its handlers (it restores the originals at teardown).
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            self.cleanup()
            print(
                "second Ctrl-C: stopped at once; nothing of the augmenter was kept",
                file=sys.stderr,
                flush=True,
            )
            os._exit(128 + signal.SIGINT)
        self.received = signum

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.received is None:
            return
        self._restore()
        name = signal.Signals(self.received).name
        raise RunInterrupted(
            f"stopped by {name} while training the augmenter, before the run's first iteration; nothing of "
            "it was cached and no run folder was kept: run the command again to start over",
            128 + self.received,
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, error: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        self._previous = {}


def train_augmenter(
    plan: AugmentPlan, datamodule: InMemoryDataModule, seed: int, path: Path, accelerator: str = "auto"
) -> None:
    """Train the augmenter on the run's training split with its own single-device Trainer; save to `path`."""
    # A separate instance: the run's own DataModule must keep its trainer and per-device batch size.
    batch_size = augmenter_batch_size(datamodule)
    data = type(datamodule)(**{**dict(datamodule.hparams), "batch_size": batch_size, "num_workers": 0})
    data.prepare_data()
    num_train = len(data.split_tensors("train")[0])
    family = plan.augmenter_family
    module_type = MODELS[family].module
    # The augmenter's size: --augmenter-width sets whichever option sizes the family's networks.
    sizes = {"latent_dim": plan.augmenter_latent_dim, module_type.width_option: plan.augmenter_width}
    lr = augmenter_lr(family)
    # A sequence dataset's options (its series' length, a CSV file's layout) carried into the augmenter's run.
    series_options = {}
    if datamodule.data_kind == "sequence":
        declared = dataset_options()
        series_options = {key: value for key, value in datamodule.hparams.items() if key in declared}
    say(
        f"augmenter: training the {family} family on the {num_train} training {datamodule.item_noun} of "
        f"{datamodule.name} ({plan.augmenter_steps} iterations, seed {seed}); cached at {path}"
    )
    config = RunConfig(
        model=family,
        data=datamodule.name,
        data_dir=str(datamodule.data_dir),
        train_size=datamodule.train_size,
        seed=seed,
        batch_size=batch_size,
        max_steps=plan.augmenter_steps,
        plugin_options={"lr": lr, **sizes, **series_options},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # The training log beside the cache entry (CSVLogger's folder): removed again if the training stops,
    # unless it was there before (an earlier entry's).
    log_dir = path.parent / path.stem
    log_dir_was_there = log_dir.exists()

    def remove_partial_entry() -> None:
        if not log_dir_was_there:
            shutil.rmtree(log_dir, ignore_errors=True)

    try:
        with torch.random.fork_rng(devices=[]):
            pl.seed_everything(int_seed(seed, "augmenter training"), workers=True, verbose=False)
            module = module_type(data.data_shape, lr=lr, **sizes)
            trainer = pl.Trainer(
                # Lightning counts optimizer steps; --augmenter-steps counts training iterations.
                max_steps=plan.augmenter_steps * module_type.optimizer_steps_per_iteration,
                accelerator=accelerator,
                devices=1,
                num_nodes=1,
                # Inside a SLURM/torchrun job this is still one process on one device, not the job's world.
                plugins=[LightningEnvironment()],
                logger=CSVLogger(str(path.parent), name=path.stem, version=""),
                callbacks=[
                    StoreRunConfig(config.to_dict()),
                    _StopAugmenterOnSignal(remove_partial_entry),
                    IterationProgressBar("augmenter"),
                ],
                enable_checkpointing=False,
                limit_val_batches=0,
                num_sanity_val_steps=0,
                enable_model_summary=False,
                # Every 50 iterations, or every epoch when an epoch is shorter (Lightning warns otherwise).
                log_every_n_steps=max(1, min(50, num_train // batch_size)),
            )
            with warnings.catch_warnings():
                # The cache entry's own log, from an earlier training of this same entry, is replaced.
                warnings.filterwarnings("ignore", ".*Experiment logs directory .* exists and is not empty.*")
                trainer.fit(module, datamodule=data)
        # A concurrent run (another grid cell) must never read half a checkpoint.
        write_atomically(path, lambda target: trainer.save_checkpoint(target, weights_only=False))
    except BaseException:
        remove_partial_entry()
        raise


def _given_augmenter(
    plan: AugmentPlan, datamodule: InMemoryDataModule, seed: int
) -> tuple[GenerativeModule, dict[str, Any]]:
    """The augmenter of `--augment-ckpt`, refused unless it is of the family the plan needs and was trained
    on this run's training data."""
    checkpoint = RunCheckpoint.load(plan.checkpoint, "--augment-ckpt")
    module, stored = _load_module(checkpoint, "--augment-ckpt")
    if stored.get("model") != plan.augmenter_family:
        raise ConfigError(
            f"--augment-ckpt {plan.checkpoint}: holds a --model {stored.get('model')} run, but this "
            f"--augment needs a --model {plan.augmenter_family} augmenter; pass such a run's checkpoint"
        )
    if stored.get("data") == datamodule.name:
        # Before the content: generated data of another shape differs by it alone, and the shape says why.
        # (Another dataset is named as such by the content check.)
        _check_data_shape(module, datamodule, f"--augment-ckpt {plan.checkpoint}")
    _check_given_checkpoint(checkpoint, stored, datamodule, seed)
    return module, stored


def _check_data_shape(module: GenerativeModule, datamodule: InMemoryDataModule, source: str) -> None:
    """The augmenter must take the run's items: the shape options it was trained with are named."""
    if tuple(module.data_shape) == tuple(datamodule.data_shape):
        return
    options = "--image-size, --channels" if datamodule.data_kind == "image" else "--seq-len, --channels"
    raise ConfigError(
        f"{source}: the augmenter takes {datamodule.item_noun} of shape {tuple(module.data_shape)}, this "
        f"run's are {tuple(datamodule.data_shape)}; give the run the shape it was trained with ({options}), "
        "or pass an augmenter trained on this data"
    )


def load_augmenter(
    plan: AugmentPlan,
    datamodule: InMemoryDataModule,
    seed: int,
    *,
    cache_dir: Path | None = None,
    accelerator: str = "auto",
    train_if_missing: bool = True,
) -> tuple[GenerativeModule, dict[str, Any]]:
    """The augmenter autoencoder (CPU, eval, frozen) and a record of where it came from."""
    if plan.checkpoint is not None:
        module, stored = _given_augmenter(plan, datamodule, seed)
        # The file's bytes too: a grid re-run compares them with a finished cell's before skipping it.
        origin = {
            "source": "checkpoint",
            "path": str(Path(plan.checkpoint).absolute()),
            "sha256": file_sha256(plan.checkpoint),
        }
    else:
        path = cache_path(plan, datamodule, seed, cache_dir)
        # Which file was judged, so that ranks waiting for its replacement recognise the new one.
        found = file_identity(path)
        cached = _cached_augmenter(path, datamodule, plan, seed) if found is not None else None
        trained_now = cached is None
        if cached is None:
            if not train_if_missing:
                raise ConfigError(f"augmenter cache {path} is missing; run prepare_data first")
            # Under SLURM/torchrun every rank gets here at once: local rank 0 trains, the others wait for it
            # (for a new file, where the cached one was unusable).
            created_by_local_rank_zero(
                path,
                lambda: train_augmenter(plan, datamodule, seed, path, accelerator),
                "augmenter",
                replacing=found,
            )
            cached = _cached_augmenter(path, datamodule, plan, seed)
            if cached is None:
                raise ConfigError(
                    f"augmenter: the {datamodule.name} training data changed while the augmenter trained "
                    f"on it; run again once {datamodule.data_dir} stays as it is"
                )
        module, stored = cached
        origin = {"source": "trained now" if trained_now else "cache", "path": str(path)}
        # A given checkpoint's shape was judged with its data (`_given_augmenter`).
        _check_data_shape(module, datamodule, f"augmenter {path}")
    module.requires_grad_(False).eval()
    record = {
        **origin,
        # Whatever its source: a resumed run must go on with the augmenter it trained with so far.
        "weights_sha256": state_sha256(module),
        "family": stored.get("model"),
        "train_size": stored.get("train_size"),
        "seed": stored.get("seed"),
        "steps": stored.get("max_steps"),
        "latent_dim": module.latent_dim,
    }
    return module, record

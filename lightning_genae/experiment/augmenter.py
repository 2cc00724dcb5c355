"""The run's augmenter autoencoder: `--augment-ckpt`'s, or one trained on the run's own training split only
and cached by what it depends on; and the augmentation plan put into a run before its model is built."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import LightningEnvironment
from pytorch_lightning.loggers import CSVLogger

from lightning_genae.augmentation import AUGMENTATIONS, BUILT_IN_AUGMENTATIONS, AugmentPlan, BuildParts
from lightning_genae.augmentation.adaptive import AdaptiveStrength
from lightning_genae.augmentation.datamodule import AugmentedDataModule, as_training_pixels
from lightning_genae.augmentation.discriminator import Composed
from lightning_genae.augmentation.latent import LatentAugmenter, bank_items, reconstruction_mse
from lightning_genae.cache import cache_root, file_sha256, state_sha256, write_atomically
from lightning_genae.callbacks.checkpoints import StoreRunConfig
from lightning_genae.callbacks.images import first_val_items
from lightning_genae.callbacks.progress_bar import IterationProgressBar
from lightning_genae.checkpoint import CONFIG_KEY, RunCheckpoint
from lightning_genae.cluster import created_by_local_rank_zero, file_identity
from lightning_genae.datamodules import InMemoryDataModule, dataset_options
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.config import RunConfig
from lightning_genae.models import MODELS, GenerativeModule
from lightning_genae.plugin_options import PluginOptions, flag
from lightning_genae.progress import say
from lightning_genae.seeding import generator, int_seed

# Part of the cache key: bump when the augmenter's training recipe changes, so stale caches are retrained.
RECIPE_VERSION = 2
AUGMENTER_BATCH = 64
AUGMENTER_LR = 1e-3


def augmenter_batch_size(datamodule: InMemoryDataModule) -> int:
    """AUGMENTER_BATCH, or the whole training split where it holds fewer items (it trains on full batches)."""
    return min(AUGMENTER_BATCH, datamodule.split_size("train"))


def augmenter_lr(family: str) -> float:
    """AUGMENTER_LR for a short reconstruction run; an adversarial family keeps its own default."""
    module_type = MODELS[family].module
    return module_type.options_type().lr if module_type.adversarial else AUGMENTER_LR


def default_cache_dir() -> Path:
    """$GENAE_CACHE_DIR/augmenters (~/.cache/lightning-genae/augmenters)."""
    return cache_root() / "augmenters"


def cache_path(plan: AugmentPlan, datamodule: InMemoryDataModule, seed: int) -> Path:
    """Named by the hash of everything a trained augmenter depends on, the data by content."""
    identity = {
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
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    size = "full" if datamodule.train_size is None else str(datamodule.train_size)
    # Readable parts for people; the digest alone decides.
    name = f"{datamodule.name}-{plan.augmenter_family}-ts{size}-seed{seed}-{digest}.ckpt"
    return default_cache_dir() / name


def _load_module(
    checkpoint: RunCheckpoint, flag: str, family: str
) -> tuple[GenerativeModule, dict[str, Any]]:
    """The augmenter `checkpoint` holds, which must be a run of the `family` the augmentation needs."""
    stored = checkpoint.contents.get(CONFIG_KEY) or {}
    if stored.get("model") != family:
        raise ConfigError(
            f"{flag}: {checkpoint.path} holds a --model {stored.get('model')} run, and this --augment needs "
            f"a --model {family} augmenter"
        )
    return checkpoint.restore(MODELS[family].module, flag), stored


def _check_given_checkpoint(
    checkpoint: RunCheckpoint, stored: dict[str, Any], datamodule: InMemoryDataModule
) -> None:
    """A given augmenter must have been trained on the run's training split, compared by content."""
    trained = checkpoint.training_data_sha256()
    current = datamodule.content_sha256("train")
    if trained != current:
        recorded = f"SHA-256 {trained[:12]}" if trained else "no hash recorded"
        size = stored.get("train_size") or "all"
        raise ConfigError(
            f"--augment-ckpt {checkpoint.path}: its augmenter was trained on other training "
            f"{datamodule.item_noun} than this run's ({recorded} against {current[:12]}; its run's --data "
            f"{stored.get('data')} --train-size {size} --seed {stored.get('seed')}); drop --augment-ckpt"
        )


def _cached_augmenter(path: Path, family: str) -> tuple[GenerativeModule, dict[str, Any]] | None:
    """The augmenter cached at `path`, or None (saying so) where it cannot serve and is trained again."""
    try:
        return _load_module(RunCheckpoint.load(path, "augmenter cache"), "augmenter cache", family)
    except ConfigError:
        say(f"augmenter: the cached {path} is unreadable or not an augmenter; training it again")
        return None


def train_augmenter(
    plan: AugmentPlan, datamodule: InMemoryDataModule, seed: int, path: Path, accelerator: str = "auto"
) -> None:
    """Train the augmenter on the run's training split with its own single-device Trainer; save to `path`."""
    # A separate instance: the run's own keeps its trainer and batch size.
    batch_size = augmenter_batch_size(datamodule)
    data = type(datamodule)(**{**dict(datamodule.hparams), "batch_size": batch_size, "num_workers": 0})
    data.prepare_data()
    num_train = data.split_size("train")
    family = plan.augmenter_family
    module_type = MODELS[family].module
    sizes = {"latent_dim": plan.augmenter_latent_dim, module_type.width_option: plan.augmenter_width}
    lr = augmenter_lr(family)
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
    # The training log beside the cache entry, removed if the training stops (unless it was there before).
    log_dir = path.parent / path.stem
    log_dir_was_there, saved = log_dir.exists(), False
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
                # One process on one device, also inside a SLURM/torchrun job.
                plugins=[LightningEnvironment()],
                logger=CSVLogger(str(path.parent), name=path.stem, version=""),
                callbacks=[StoreRunConfig(config.to_dict()), IterationProgressBar("augmenter")],
                enable_checkpointing=False,
                limit_val_batches=0,
                num_sanity_val_steps=0,
                enable_model_summary=False,
                log_every_n_steps=max(1, min(50, num_train // batch_size)),
            )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", ".*Experiment logs directory .* exists and is not empty.*")
                trainer.fit(module, datamodule=data)
        write_atomically(path, lambda target: trainer.save_checkpoint(target, weights_only=False))
        saved = True
    finally:
        if not saved and not log_dir_was_there:
            shutil.rmtree(log_dir, ignore_errors=True)


def load_augmenter(
    plan: AugmentPlan,
    datamodule: InMemoryDataModule,
    seed: int,
    *,
    accelerator: str = "auto",
) -> tuple[GenerativeModule, dict[str, Any]]:
    """The augmenter autoencoder (CPU, eval, frozen) and a record of where it came from."""
    if plan.checkpoint is not None:
        checkpoint = RunCheckpoint.load(plan.checkpoint, "--augment-ckpt")
        module, stored = _load_module(checkpoint, "--augment-ckpt", plan.augmenter_family)
        _check_given_checkpoint(checkpoint, stored, datamodule)
        # The file's bytes too: a grid re-run compares them with a finished cell's.
        origin = {
            "source": "checkpoint",
            "path": str(Path(plan.checkpoint).absolute()),
            "sha256": file_sha256(plan.checkpoint),
        }
    else:
        path = cache_path(plan, datamodule, seed)
        found = file_identity(path)
        cached = _cached_augmenter(path, plan.augmenter_family) if found is not None else None
        trained_now = cached is None
        if cached is None:
            created_by_local_rank_zero(
                path,
                lambda: train_augmenter(plan, datamodule, seed, path, accelerator),
                "augmenter",
                replacing=found,
            )
            checkpoint = RunCheckpoint.load(path, "augmenter cache")
            cached = _load_module(checkpoint, "augmenter cache", plan.augmenter_family)
        module, stored = cached
        origin = {"source": "trained now" if trained_now else "cache", "path": str(path)}
    module.requires_grad_(False).eval()
    record = {
        **origin,
        # A resumed run must go on with the augmenter it trained with so far.
        "weights_sha256": state_sha256(module),
        "family": stored.get("model"),
        "train_size": stored.get("train_size"),
        "seed": stored.get("seed"),
        "steps": stored.get("max_steps"),
        "latent_dim": module.latent_dim,
    }
    return module, record


@dataclass(frozen=True)
class Attached:
    """What training runs on once the plan is in place, and the record summary.json keeps of it."""

    datamodule: InMemoryDataModule | AugmentedDataModule
    record: dict[str, Any]
    discriminator_augmentation: Composed | None = None
    strength: AdaptiveStrength | None = None

    def final_record(self) -> dict[str, Any]:
        """The record for summary.json, with the p the controller ended training at (once the run is over)."""
        if self.strength is None:
            return self.record
        return {
            **self.record,
            "final_p": round(float(self.strength.p), 6),
            "final_ada_rt": float(self.strength.rt),
        }


def attach_augmentation(
    plan: AugmentPlan,
    datamodule: InMemoryDataModule,
    *,
    seed: int,
    device: torch.device,
    accelerator: str,
    total_iterations: Callable[[int], int],
    fast_dev_run: bool = False,
) -> Attached:
    """Wrap the data (data-side augmentations) and build the discriminator-side ones for the model."""
    if not plan.names:
        return Attached(datamodule, {})
    record: dict[str, Any] = {
        "augment": "+".join(plan.names),
        **{key: value for key, value in plan.options.items() if value is not None},
    }
    augmenter = None
    if plan.needs_augmenter:
        if fast_dev_run:
            plan = replace(plan, values={**plan.values, "augmenter_steps": 1})
        module, origin = load_augmenter(plan, datamodule, seed, accelerator=accelerator)
        augmenter = LatentAugmenter(module, noise=plan.noise, interp=plan.interp)
        draws = generator(seed, "augmenter fit pixels")
        augmenter.to(device).fit(
            bank_items(datamodule, seed),
            prepare=lambda items: as_training_pixels(datamodule, datamodule.to_model_range(items), draws),
        )
        origin["val_recon_mse"] = reconstruction_mse(
            augmenter, first_val_items(datamodule, 2000), prepare=datamodule.to_model_range
        )
        record["augmenter"] = origin
        say(
            f"augmenter: {origin['family']}, {origin['source']} ({origin['path']}); "
            f"validation reconstruction MSE {origin['val_recon_mse']:.4f}"
        )
    # One controller per run, for every augmentation it steers.
    strength = (
        AdaptiveStrength(plan.ada_target, plan.ada_interval, plan.ada_kimg, device=device)
        if plan.adaptive
        else None
    )
    parts = BuildParts(augmenter, strength, channels=datamodule.data_shape[0])
    # In registry order, whatever the order typed.
    built = {
        name: spec.build(plan.settings[name], parts)
        for name, spec in AUGMENTATIONS.items()
        if name in plan.names and spec.side == "discriminator" and spec.build is not None
    }
    check_plugin_transforms(built, datamodule, device)
    if "ae-d" in built and getattr(plan.settings["ae-d"], "augment_p", None) == 1:
        say("note: ae-d at --augment-p 1 shows the discriminator no real input; use a p below 1")
    transforms = list(built.values())
    labels = [transform_label(name, transform, plan.settings[name]) for name, transform in built.items()]
    if labels:
        record["discriminator_side"] = labels
    if plan.data_side:
        assert augmenter is not None
        train_images = datamodule.split_size("train")
        length = total_iterations(train_images)
        if not plan.online and plan.pool is None:
            record["augment_pool"] = train_images
        datamodule = AugmentedDataModule(
            datamodule, plan, augmenter, seed=seed, total_iterations=length, strength=strength
        )
    return Attached(datamodule, record, Composed(transforms, labels) if transforms else None, strength)


def check_plugin_transforms(
    built: dict[str, Callable[[torch.Tensor], Any]], datamodule: InMemoryDataModule, device: torch.device
) -> None:
    """Refuse a plug-in's discriminator-side transform whose output, on a training batch, carries no gradient
    from its input: the generator, which learns through it, would learn nothing, every value finite. The
    global random streams are left as they were."""
    plugins = {name: transform for name, transform in built.items() if name not in BUILT_IN_AUGMENTATIONS}
    if not plugins:
        return
    first = torch.arange(min(datamodule.batch_size, datamodule.split_size("train")))
    images = datamodule.to_model_range(datamodule.items_at("train", first)[0].to(device))
    cuda_devices = [device] if device.type == "cuda" else []
    for name, transform in plugins.items():
        # As a generator's images reach it: a tanh's output.
        logits = torch.atanh(images.clamp(-1 + 1e-6, 1 - 1e-6)).requires_grad_(True)
        with torch.random.fork_rng(devices=cuda_devices):
            returned = transform(torch.tanh(logits))
        gradient = None
        if isinstance(returned, torch.Tensor) and returned.requires_grad:
            (gradient,) = torch.autograd.grad(returned.sum(), logits, allow_unused=True)
        if gradient is None or not bool(gradient.abs().sum() > 0):
            module = getattr(AUGMENTATIONS[name].build, "__module__", None) or "its module"
            raise ConfigError(
                f"--augment {name} returned images that carry no gradient from its input (detached, or "
                f"rounded or thresholded); fix it in {module}"
            )


def transform_label(name: str, transform: Callable[..., Any], settings: PluginOptions) -> str:
    """A discriminator-side transform in the run header: its class's repr, else `flip (--flip-p 0.25)`."""
    anonymous = (
        functools.partial,
        types.FunctionType,
        types.MethodType,
        types.BuiltinFunctionType,
        torch.nn.Module,
    )
    if not isinstance(transform, anonymous) and type(transform).__repr__ is not object.__repr__:
        return repr(transform).splitlines()[0]
    values = ", ".join(f"{flag(key)} {value}" for key, value in settings.to_dict().items())
    return f"{name} ({values})" if values else name

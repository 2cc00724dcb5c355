"""Puts a resolved augmentation plan into a run, before its model is built: the augmenter, the wrapped data,
the discriminator-side augmentation."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lightning_genae.augmentation import AUGMENTATIONS, AugmentPlan, BuildParts
from lightning_genae.augmentation.adaptive import AdaptiveStrength
from lightning_genae.augmentation.datamodule import AugmentedDataModule, as_training_pixels
from lightning_genae.augmentation.discriminator import Composed
from lightning_genae.augmentation.latent import LatentAugmenter, bank_items, reconstruction_mse
from lightning_genae.callbacks.images import first_val_items
from lightning_genae.datamodules import InMemoryDataModule
from lightning_genae.experiment.augmenter import load_augmenter
from lightning_genae.plugin_options import PluginOptions, flag
from lightning_genae.progress import say
from lightning_genae.seeding import generator


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
    """Wrap the data (data-side augmentations) and build the discriminator-side ones for the model;
    `total_iterations(training images)` is the run's length."""
    if not plan.names:
        return Attached(datamodule, {})
    record: dict[str, Any] = {
        "augment": "+".join(plan.names),
        **{key: value for key, value in plan.options.items() if value is not None},
    }
    augmenter = None
    if plan.needs_augmenter:
        if fast_dev_run:
            plan = plan.with_values(augmenter_steps=1)
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


def transform_label(name: str, transform: Callable[..., Any], settings: PluginOptions) -> str:
    """How the run header names a discriminator-side transform: its class's own repr, else the augmentation's
    name and options (`flip (--flip-p 0.25)`)."""
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

"""A run's `--augment` and its options, checked once against the chosen augmentations and the model: the
augmentation plan the run hands on (`resolve_augment_plan`)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from lightning_genae.augmentation import (
    AUGMENTATIONS,
    AUTO,
    AugmentPlan,
    augmentation_choices,
    augmentation_fits,
    augmentation_options,
    augmenter_family,
    is_data_side,
    option_defaults,
    parse_augment,
)
from lightning_genae.errors import ConfigError, UnreadOptions, agree
from lightning_genae.experiment.config import RunConfig
from lightning_genae.models import MODELS
from lightning_genae.plugin_options import PluginOptions


def _settings(
    plan_names: tuple[str, ...], given: Mapping[str, Any], only: Collection[str] | None = None
) -> dict[str, PluginOptions]:
    """Each chosen augmentation's options from the given values it declares (those in `only`, when given);
    its checks run here."""
    settings = {}
    for name in plan_names:
        options = AUGMENTATIONS[name].options
        declared = options.types()
        settings[name] = options.parse(
            {key: value for key, value in given.items() if key in declared and (only is None or key in only)}
        )
    return settings


def _reading_settings(plan_names: tuple[str, ...], given: Mapping[str, Any]) -> dict[str, PluginOptions]:
    """The options as far as they decide what is read: a value out of its range is left at its default here,
    so that an unread option is refused as unread, not as out of range; a choice that fails is refused."""
    passing: dict[str, Any] = {}
    for options in {AUGMENTATIONS[name].options for name in plan_names}:
        own = options.passing_values(given)
        if own is None:
            _settings(plan_names, given)
        else:
            passing.update(own)
    return _settings(plan_names, given, only=set(passing))


def _options_read(settings: Mapping[str, PluginOptions]) -> tuple[set[str], dict[str, str]]:
    """(the options some chosen augmentation reads, why each other declared one is unread)."""
    read: set[str] = set()
    reasons: dict[str, str] = {}
    for options in settings.values():
        unread = options.unread()
        read |= set(options.types()) - set(unread)
        for name, reason in unread.items():
            reasons.setdefault(name, reason)
    return read, {name: reason for name, reason in reasons.items() if name not in read}


def resolve_augment_plan(
    config: RunConfig, image_discriminator: bool, drop_unused: bool = False, data_kind: str = "image"
) -> AugmentPlan:
    """Check the augmentation options against `--augment` and the model, and fill defaults. An option the
    chosen augmentations would ignore is an error (`drop_unused`, a grid cell's: left out), so an ablation
    never runs with a setting the user believes is active."""
    names = parse_augment(config.augment)
    plan_names = tuple(name for name in names if name != "none")
    given = config.given_plugin_options(augmentation_options())
    image_only = [name for name in plan_names if not augmentation_fits(name, data_kind)]
    read, reasons = _options_read(_reading_settings(plan_names, given)) if not image_only else (set(), {})
    # ADA's controller (`ada`, `--augment-p auto`) steers p by the sign of a discriminator's real/fake logits.
    auto_p = "augment_p" in read and given.get("augment_p") == AUTO
    adaptive = [name for name in plan_names if name == "ada"] + ["--augment-p auto"] * auto_p
    d_side = [name for name in plan_names if AUGMENTATIONS[name].side == "discriminator"]
    # --augment-anneal takes the data side's p to zero; ae-d reads the same --augment-p and keeps it.
    data_side = [name for name in plan_names if is_data_side((name,))] or ["none"]
    anneals = "augment_anneal" in read and given.get("augment_anneal")
    fits = [name for name in augmentation_choices() if name == "none" or augmentation_fits(name, data_kind)]
    refusals = [
        (
            image_only,
            f"--augment {config.augment}: {', '.join(image_only)} {agree(image_only, 'works', 'work')} on "
            f"images only and --data {config.data} is {data_kind} data; use --augment {' or '.join(fits)}",
        ),
        (
            adaptive and not MODELS[config.model].real_logits,
            f"{' and '.join(adaptive)} {agree(adaptive, 'steers', 'steer')} p by the sign of a "
            f"discriminator's real/fake logits, and --model {config.model} has none; use --model "
            + " or ".join(name for name, spec in MODELS.items() if spec.real_logits),
        ),
        (
            d_side and not image_discriminator,
            f"--augment {config.augment}: {', '.join(d_side)} {agree(d_side, 'augments', 'augment')} the "
            f"inputs of a discriminator of images, and --model {config.model} has none; use --model "
            + " or ".join(name for name, spec in MODELS.items() if spec.image_discriminator)
            + " or --augment "
            + "/".join(name for name, spec in AUGMENTATIONS.items() if spec.side == "data"),
        ),
        (
            anneals and "ae-d" in plan_names and data_side != ["none"],
            f"--augment-anneal takes {data_side[0]}'s p to zero, and ae-d keeps --augment-p fixed; drop "
            f"--augment-anneal, or use --augment {data_side[0]} --augment-anneal",
        ),
    ]
    for refused, message in refusals:
        if refused:
            raise ConfigError(message)
    stray = [name for name in given if name not in read]
    if stray and not drop_unused:
        nothing = f"does nothing with --augment {config.augment}; drop it, or use its augmentation"
        explained = sorted(stray, key=lambda name: name not in reasons)
        raise UnreadOptions({name: reasons.get(name, nothing) for name in explained})
    # Now every value read is checked; one the run does not read (a grid cell's) is left at its default.
    settings = _settings(plan_names, given, only=read)
    chosen = {key: value for options in settings.values() for key, value in options.to_dict().items()}
    used = {key: value for key, value in chosen.items() if key in read}
    defaults = option_defaults()
    return AugmentPlan(
        names=plan_names,
        augmenter_family=augmenter_family(plan_names, data_kind) or ("ae" if data_kind == "image" else "rae"),
        settings=settings,
        values={**defaults, **used},
        # Only what an augmentation uses goes into config.yaml; the rest stays None (= not set).
        options={key: used[key] for key in defaults if key in used},
    )


def augmentation_defaults(augment: str) -> dict[str, Any]:
    """The default of every option of the augmentations `augment` names (every arm of a grid's comma list)."""
    defaults: dict[str, Any] = {}
    for arm in str(augment).split(","):
        try:
            names = parse_augment(arm)
        except ConfigError:
            continue
        for name in (name for name in names if name in AUGMENTATIONS):
            defaults.update(AUGMENTATIONS[name].options.parse({}).to_dict())
    return defaults

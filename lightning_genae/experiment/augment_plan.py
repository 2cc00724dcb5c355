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
from lightning_genae.plugin_options import PluginOptions, flag, unread_refusal


def _check_anneal_covers_every_side(
    plan_names: tuple[str, ...], given: Mapping[str, Any], read: Collection[str]
) -> None:
    """--augment-anneal takes the data side's p to zero; ae-d reads the same --augment-p and keeps it, so
    in `ae+ae-d` only half of the setting would act."""
    if "augment_anneal" not in read or not given.get("augment_anneal") or "ae-d" not in plan_names:
        return
    data_side = [name for name in plan_names if is_data_side((name,))]
    if data_side:
        joined = "+".join(plan_names)
        raise ConfigError(
            f"--augment-anneal takes {data_side[0]}'s p to zero, and ae-d keeps --augment-p fixed, so in "
            f"--augment {joined} only half of it would anneal; drop --augment-anneal, or anneal the data "
            f"side alone (--augment {data_side[0]} --augment-anneal)"
        )


def _check_adaptive(config: RunConfig, plan_names: tuple[str, ...], auto_p: bool) -> None:
    """ADA's controller (`ada`, `--augment-p auto`) steers p by the real/fake logits of a discriminator."""
    adaptive = [name for name in plan_names if name == "ada"] + (["--augment-p auto"] if auto_p else [])
    if adaptive and not MODELS[config.model].real_logits:
        with_logits = [name for name, spec in MODELS.items() if spec.real_logits]
        raise ConfigError(
            f"{' and '.join(adaptive)} {agree(adaptive, 'steers', 'steer')} p by the sign of a "
            f"discriminator's real/fake logits, and --model {config.model} has none; "
            f"use --model {' or '.join(with_logits)}"
        )


def _check_discriminator_side(
    config: RunConfig, plan_names: tuple[str, ...], image_discriminator: bool
) -> None:
    """Discriminator-side augmentations act on a discriminator of images; a model without one is an error."""
    d_side = [name for name in plan_names if AUGMENTATIONS[name].side == "discriminator"]
    if d_side and not image_discriminator:
        takers = [name for name, spec in MODELS.items() if spec.image_discriminator]
        data_side = [name for name, spec in AUGMENTATIONS.items() if spec.side == "data"]
        raise ConfigError(
            f"--augment {config.augment}: {', '.join(d_side)} {agree(d_side, 'augments', 'augment')} "
            f"the inputs of a discriminator of images, and --model {config.model} has none; "
            f"use --model {' or '.join(takers)} "
            f"or --augment {'/'.join(data_side)}"
        )


def given_options(config: RunConfig) -> dict[str, Any]:
    """The augmentation options the user set (None in a configuration means "left to its default")."""
    return config.given_plugin_options(augmentation_options())


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


def _check_stray_options(config: RunConfig, stray: list[str], reasons: Mapping[str, str]) -> None:
    """Refuse options the chosen augmentations would ignore: each reason once, with the options it holds
    for, or, where none has a reason of its own, all of them in one sentence."""
    explained = [name for name in stray if name in reasons]
    if explained:
        raise unread_refusal([*explained, *(name for name in stray if name not in reasons)], reasons)
    if stray:
        flags = ", ".join(flag(option) for option in stray)
        raise UnreadOptions(
            f"{flags} {agree(stray, 'does', 'do')} nothing with --augment {config.augment}; drop "
            + agree(
                stray,
                "it, or use the augmentation it belongs to",
                "them, or use the augmentations they belong to",
            )
            + " (see --help)",
            tuple(stray),
        )


def _check_data_kind(config: RunConfig, plan_names: tuple[str, ...], kind: str) -> None:
    """Image-only augmentations on series data are refused, naming those that fit."""
    image_only = [name for name in plan_names if not augmentation_fits(name, kind)]
    if image_only:
        fits = [name for name in augmentation_choices() if name == "none" or augmentation_fits(name, kind)]
        raise ConfigError(
            f"--augment {config.augment}: {', '.join(image_only)} {agree(image_only, 'works', 'work')} on "
            f"images only and --data {config.data} is {kind} data; use --augment {' or '.join(fits)}"
        )


def resolve_augment_plan(
    config: RunConfig, image_discriminator: bool, drop_unused: bool = False, data_kind: str = "image"
) -> AugmentPlan:
    """Check the augmentation options of a RunConfig against `--augment` and the model; fill defaults.

    An option the chosen augmentations would ignore is an error, so an ablation never runs with a setting
    the user believes is active; `drop_unused` leaves them out instead (a grid's cells).
    `image_discriminator`: whether the model has a discriminator of images, which discriminator-side ones
    need.
    """
    names = parse_augment(config.augment)
    plan_names = tuple(name for name in names if name != "none")
    _check_data_kind(config, plan_names, data_kind)
    given = given_options(config)
    read, reasons = _options_read(_reading_settings(plan_names, given))
    _check_adaptive(config, plan_names, auto_p="augment_p" in read and given.get("augment_p") == AUTO)
    _check_discriminator_side(config, plan_names, image_discriminator)
    _check_anneal_covers_every_side(plan_names, given, read)
    if not drop_unused:
        _check_stray_options(config, [name for name in given if name not in read], reasons)
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

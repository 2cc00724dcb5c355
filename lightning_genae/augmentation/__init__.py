"""Augmentation registry and the plan a run's `--augment` value stands for: names join with '+'; data-side
ones change what the DataModule yields, discriminator-side ones need an `ImageDiscriminator`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from lightning_genae.augmentation.ada import (
    AdaOptions,
    AdaPipeline,
    check_ops_fit,
    default_ada_ops,
    parse_ada_ops,
)
from lightning_genae.augmentation.diffaug import DiffAugmentOptions
from lightning_genae.augmentation.discriminator import AugmenterOnInputs, DiffAugment
from lightning_genae.augmentation.options import AugmenterOnInputsOptions, DataSideOptions
from lightning_genae.errors import PLUGIN_HINT, OptionError
from lightning_genae.plugin_options import AUTO, PluginOptions, Registry, did_you_mean, option_specs

if TYPE_CHECKING:
    from lightning_genae.augmentation.adaptive import AdaptiveStrength
    from lightning_genae.models.protocols import DiscriminatorAugmentation

Side = Literal["data", "discriminator"]


@dataclass(frozen=True)
class BuildParts:
    """What a discriminator-side augmentation is built from besides its plan."""

    # The frozen augmenter (ae-d); None when the run has none.
    augmenter: Callable | None
    # The run's one ADA controller (`ada`, `--augment-p auto`); None when p is fixed.
    strength: AdaptiveStrength | None
    channels: int


def _build_ada(options: AdaOptions, parts: BuildParts) -> DiscriminatorAugmentation:
    ops = parse_ada_ops(options.ada_ops) if options.ada_ops else default_ada_ops(parts.channels)
    check_ops_fit(ops, parts.channels)
    assert parts.strength is not None
    return AdaPipeline(ops, parts.strength)


@dataclass(frozen=True)
class AugmentationSpec:
    """One `--augment` name: where it acts, its options (its flags), a discriminator-side one's `build`."""

    description: str
    side: Side
    options: type[PluginOptions] = PluginOptions
    # The autoencoder family it runs as its augmenter (trained on the training split, or --augment-ckpt).
    augmenter: str | None = None
    # The family it runs on series instead; None: the augmentation works on images only.
    sequence_augmenter: str | None = None
    build: Callable[[Any, BuildParts], DiscriminatorAugmentation] | None = None


def _data_side(description: str, augmenter: str, sequence_augmenter: str | None = None) -> AugmentationSpec:
    return AugmentationSpec(description, "data", DataSideOptions, augmenter, sequence_augmenter)


NONE_DESCRIPTION = "train on the data as it is"
# Discriminator-side transforms compose in this order: the augmenter (ae-d) before DiffAugment.
AUGMENTATIONS: Registry[AugmentationSpec] = Registry(
    "augment",
    {
        "ae": _data_side(
            "an autoencoder trained on the training split encodes, perturbs and decodes part of each batch",
            "ae",
            "rae",
        ),
        "vae": _data_side("as ae, with a VAE as the augmenter (perturbs its posterior means)", "vae"),
        "vaegan": _data_side(
            "as ae, with a VAE-GAN as the augmenter (perturbs its posterior means)", "vaegan"
        ),
        "aae": _data_side(
            "as ae, with an adversarial autoencoder as the augmenter (its codes are matched to N(0, I))",
            "aae",
        ),
        "ae-d": AugmentationSpec(
            "the frozen augmenter's encode-perturb-decode on discriminator inputs, real and fake",
            side="discriminator",
            options=AugmenterOnInputsOptions,
            augmenter="ae",
            build=lambda options, parts: AugmenterOnInputs(
                parts.augmenter, p=parts.strength if options.augment_p == AUTO else options.augment_p
            ),
        ),
        "diffaug": AugmentationSpec(
            "DiffAugment (color, translation, cutout) on every discriminator input, real and fake",
            side="discriminator",
            options=DiffAugmentOptions,
            build=lambda options, parts: DiffAugment(
                options.diffaug_policy, translation=options.diffaug_translation, cutout=options.diffaug_cutout
            ),
        ),
        # Last among the discriminator-side ones: the augmenter (ae-d) must see images like those it was
        # trained on, which ADA's geometric ops would not be; and after a fixed DiffAugment, ADA's controller
        # adds just the strength that what D sees still lacks.
        "ada": AugmentationSpec(
            "ADA (Karras et al. 2020): its pipeline on every discriminator input, real and fake, with a "
            "probability p that a controller steers so that E[sign(D(real))] stays at --ada-target",
            side="discriminator",
            options=AdaOptions,
            build=_build_ada,
        ),
    },
)
# The project's own, tested with its nets; the rest are plug-ins' (`register_augmentation`).
BUILT_IN_AUGMENTATIONS = frozenset(AUGMENTATIONS)


def augmentation_choices() -> dict[str, str]:
    """Every `--augment` name with its one-line description, `none` first (for --help)."""
    return {"none": NONE_DESCRIPTION, **{name: spec.description for name, spec in AUGMENTATIONS.items()}}


def parse_augment(spec: str) -> list[str]:
    """Split an `augment` value into registered names; `none` stands alone (else its OptionError)."""
    names = [name.strip() for name in spec.split("+")]
    unknown = [name for name in names if name != "none" and name not in AUGMENTATIONS]
    if unknown or not spec.strip():
        hint = "".join(did_you_mean(name, augmentation_choices()) for name in unknown)
        raise OptionError(
            "augment",
            f"{spec!r}: unknown augmentation {', '.join(unknown) or '(empty)'}{hint}; "
            f"choose from {', '.join(augmentation_choices())} (join several with '+') {PLUGIN_HINT}",
        )
    data_side = [name for name in names if name in AUGMENTATIONS and AUGMENTATIONS[name].side == "data"]
    faults = {
        "'none' cannot be combined; drop it or use none alone": "none" in names and len(names) > 1,
        "names an augmentation twice; list each once": len(set(names)) != len(names),
        f"{' and '.join(data_side)} are two choices of the same augmenter; keep one": len(data_side) > 1,
    }
    fault = next((fault for fault, found in faults.items() if found), None)
    if fault is not None:
        raise OptionError("augment", f"{spec!r}: {fault}")
    return names


def is_data_side(names: Collection[str]) -> bool:
    return any(AUGMENTATIONS[name].side == "data" for name in names if name in AUGMENTATIONS)


def augmentation_fits(name: str, data_kind: str) -> bool:
    """Whether the augmentation `name` works on data of `data_kind` (every one works on images)."""
    return data_kind == "image" or AUGMENTATIONS[name].sequence_augmenter is not None


def augmenter_family(names: Collection[str], data_kind: str = "image") -> str | None:
    """The autoencoder family the augmentations run: a data-side one's, which ae-d then shares; on series, the
    augmentation's sequence augmenter (`rae` for `ae`)."""
    specs = sorted((AUGMENTATIONS[name] for name in names if name in AUGMENTATIONS), key=lambda s: s.side)
    families = (spec.augmenter if data_kind == "image" else spec.sequence_augmenter for spec in specs)
    return next((family for family in families if family is not None), None)


def needs_augmenter(names: Collection[str]) -> bool:
    return augmenter_family(names) is not None


def option_classes() -> dict[str, type[PluginOptions]]:
    return {name: spec.options for name, spec in AUGMENTATIONS.items()}


def augmentation_options() -> dict[str, tuple[Any, dataclasses.Field]]:
    """Every option a registered augmentation declares, by name: (type, field); a shared one counts once."""
    return option_specs(option_classes())


def option_defaults() -> dict[str, Any]:
    """Every augmentation option's default (None: its owner decides, e.g. the pool is the split's size)."""
    return {name: spec.default for name, (_, spec) in augmentation_options().items()}


def tunable_options() -> tuple[str, ...]:
    """The augmentation options a grid may tune (declared with `tunable=True`)."""
    return tuple(name for name, (_, spec) in augmentation_options().items() if spec.metadata.get("tunable"))


def _value(name: str) -> Any:
    return property(lambda plan: plan.values[name], doc=f"The value of {name} in force.")


@dataclass(frozen=True)
class AugmentPlan:
    """What `--augment` and its options ask for, validated and with defaults filled in."""

    names: tuple[str, ...]
    augmenter_family: str  # the family the augmenter is (or would be) built as
    # Each chosen augmentation's options, as its `build` and the data side read them.
    settings: Mapping[str, PluginOptions] = field(default_factory=dict)
    # Every registered augmentation option: the value read by the chosen augmentations, else its default.
    values: Mapping[str, Any] = field(default_factory=option_defaults)
    # The augmentation options this plan reads, with their values: what config.yaml records.
    options: dict[str, Any] = field(default_factory=dict)

    p = _value("augment_p")  # a number, or AUTO: ADA's controller sets it
    mode = _value("augment_mode")
    pool = _value("augment_pool")
    anneal = _value("augment_anneal")
    noise = _value("augment_noise")
    interp = _value("augment_interp")
    checkpoint = _value("augment_ckpt")
    augmenter_steps = _value("augmenter_steps")
    augmenter_width = _value("augmenter_width")
    augmenter_latent_dim = _value("augmenter_latent_dim")
    ada_target = _value("ada_target")
    ada_interval = _value("ada_interval")
    ada_kimg = _value("ada_kimg")

    @property
    def data_side(self) -> bool:
        return is_data_side(self.names)

    @property
    def discriminator_side(self) -> bool:
        sides = {AUGMENTATIONS[name].side for name in self.names if name in AUGMENTATIONS}
        return "discriminator" in sides

    @property
    def needs_augmenter(self) -> bool:
        return needs_augmenter(self.names)

    @property
    def online(self) -> bool:
        return self.data_side and self.mode != "offline"

    @property
    def adaptive(self) -> bool:
        """Whether ADA's controller runs: for `ada`, or for `--augment-p auto`."""
        return "ada" in self.names or self.p == AUTO

    def config_values(self) -> dict[str, Any]:
        """Every augmentation option: the value used, or None for one no chosen augmentation reads."""
        return {key: self.options.get(key) for key in self.values}

"""Augmentation registry and the plan a run's `--augment` value stands for.

Names combine with '+': `ae+diffaug` trains the GAN on AE-augmented data and shows its discriminator
DiffAugment-ed inputs. Data-side augmentations (`ae`, `vae`, `vaegan`) change what the DataModule yields
and work with every model; discriminator-side ones (`diffaug`, `ae-d`, `ada`) need a model that is an
`ImageDiscriminator`. Each name is one `AugmentationSpec` in `AUGMENTATIONS`.

Over 400 lines for one job: the registry and the plan of a run's augmentations, with every check
of how they combine and which options each reads.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lightning_genae.augmentation.ada import AdaPipeline, check_ops_fit, default_ada_ops, parse_ada_ops
from lightning_genae.augmentation.diffaug import CUTOUT_RATIO, RATIO_LIMITS, TRANSLATION_RATIO, parse_policy
from lightning_genae.augmentation.discriminator import AdaptivePipeline, AugmenterOnInputs, DiffAugment
from lightning_genae.config import AUTO, flag
from lightning_genae.errors import PLUGIN_HINT, ConfigError, agree
from lightning_genae.models import MODELS

if TYPE_CHECKING:
    from lightning_genae.augmentation.adaptive import AdaptiveStrength
    from lightning_genae.config import RunConfig
    from lightning_genae.models.base import DiscriminatorAugmentation

# Defaults of the augmentation options (RunConfig keeps None so that a stray option can be detected).
DEFAULTS: dict[str, Any] = {
    "augment_p": 0.25,
    "augment_mode": "online",
    "augment_pool": None,  # the training split's size
    "augment_anneal": False,
    "augment_noise": 0.5,
    "augment_interp": 0.5,
    "augment_ckpt": None,
    "augmenter_steps": 1000,
    "augmenter_width": 64,
    "augmenter_latent_dim": 32,
    "diffaug_policy": "color,translation,cutout",
    # ADA's controller (augmentation/adaptive.py), for `ada` and `--augment-p auto`. ADA's target and
    # interval; its kimg is 500 for runs of millions of images, in which p would barely move in our runs of
    # ~100k (1,500 iterations of 64): 100 lets p go from 0 to 1 within such a run.
    "ada_target": 0.6,
    "ada_interval": 4,
    "ada_kimg": 100.0,
    "ada_ops": None,  # the data's default: default_ada_ops(channels) in augmentation/ada.py
    "diffaug_translation": TRANSLATION_RATIO,
    "diffaug_cutout": CUTOUT_RATIO,
}
# What every augmentation that runs the augmenter autoencoder reads.
AUGMENTER_OPTIONS = (
    "augment_noise",
    "augment_interp",
    "augment_ckpt",
    "augmenter_steps",
    "augmenter_width",
    "augmenter_latent_dim",
)
# Data-side options that only one --augment-mode reads: an offline pool has a size, online mixing has a
# probability and an annealing schedule.
MODE_OF_OPTION = {"augment_pool": "offline", "augment_p": "online", "augment_anneal": "online"}
# What ADA's controller reads: `ada`, and `--augment-p auto` of ae/vae/ae-d.
CONTROLLER_OPTIONS = ("ada_target", "ada_interval", "ada_kimg")
DATA_SIDE_OPTIONS = ("augment_mode", "augment_pool", "augment_p", "augment_anneal", *AUGMENTER_OPTIONS)
# The DiffAugment option that sizes each operation of its policy; one whose operation the policy leaves out
# is read by nothing.
DIFFAUG_RATIO_OPTIONS = {"translation": "diffaug_translation", "cutout": "diffaug_cutout"}

Side = Literal["data", "discriminator"]


@dataclass(frozen=True)
class BuildParts:
    """What a discriminator-side augmentation is built from besides its plan."""

    # The frozen augmenter (ae-d); None when the run has none.
    augmenter: Callable | None
    # The run's one ADA controller (`ada`, `--augment-p auto`); None when p is fixed.
    strength: AdaptiveStrength | None
    channels: int


def _build_ada(plan: AugmentPlan, parts: BuildParts) -> DiscriminatorAugmentation:
    ops = parse_ada_ops(plan.ada_ops) if plan.ada_ops else default_ada_ops(parts.channels)
    check_ops_fit(ops, parts.channels)
    assert parts.strength is not None
    return AdaptivePipeline(AdaPipeline(ops), parts.strength)


@dataclass(frozen=True)
class AugmentationSpec:
    """One `--augment` name: where it acts, the options it reads, and how it is built.

    Data-side augmentations change what the DataModule yields (augmentation/datamodule.py wraps the data
    with the augmenter) and work with every model; discriminator-side ones transform every input of an
    `ImageDiscriminator` model, real and generated, built by `build(plan, augmenter)`.
    """

    description: str
    side: Side
    options: tuple[str, ...]
    # The autoencoder family it runs as its augmenter (trained on the training split, or --augment-ckpt).
    augmenter: str | None = None
    # The family it runs on series instead; None: the augmentation works on images only.
    sequence_augmenter: str | None = None
    build: Callable[[AugmentPlan, BuildParts], DiscriminatorAugmentation] | None = None

    def options_read(self, mode: str | None) -> set[str]:
        if self.side != "data":
            return set(self.options)
        mode = mode or DEFAULTS["augment_mode"]
        return {option for option in self.options if MODE_OF_OPTION.get(option, mode) == mode}


NONE_DESCRIPTION = "train on the data as it is"
# Discriminator-side transforms compose in this order: the augmenter (ae-d) before DiffAugment.
AUGMENTATIONS: dict[str, AugmentationSpec] = {
    "ae": AugmentationSpec(
        "an autoencoder trained on the training split encodes, perturbs and decodes part of each batch",
        side="data",
        options=DATA_SIDE_OPTIONS,
        augmenter="ae",
        sequence_augmenter="rae",
    ),
    "vae": AugmentationSpec(
        "as ae, with a VAE as the augmenter (perturbs its posterior means)",
        side="data",
        options=DATA_SIDE_OPTIONS,
        augmenter="vae",
    ),
    "vaegan": AugmentationSpec(
        "as ae, with a VAE-GAN as the augmenter (perturbs its posterior means)",
        side="data",
        options=DATA_SIDE_OPTIONS,
        augmenter="vaegan",
    ),
    "aae": AugmentationSpec(
        "as ae, with an adversarial autoencoder as the augmenter (its codes are matched to N(0, I))",
        side="data",
        options=DATA_SIDE_OPTIONS,
        augmenter="aae",
    ),
    "ae-d": AugmentationSpec(
        "the frozen augmenter's encode-perturb-decode on discriminator inputs, real and fake",
        side="discriminator",
        options=("augment_p", *AUGMENTER_OPTIONS),
        augmenter="ae",
        build=lambda plan, parts: AugmenterOnInputs(
            parts.augmenter, p=parts.strength if plan.p == AUTO else plan.p
        ),
    ),
    "diffaug": AugmentationSpec(
        "DiffAugment (color, translation, cutout) on every discriminator input, real and fake",
        side="discriminator",
        options=("diffaug_policy", *DIFFAUG_RATIO_OPTIONS.values()),
        build=lambda plan, parts: DiffAugment(
            plan.diffaug_policy, translation=plan.diffaug_translation, cutout=plan.diffaug_cutout
        ),
    ),
    # Last among the discriminator-side ones: the augmenter (ae-d) must see images like those it was
    # trained on, which ADA's geometric ops would not be; and after a fixed DiffAugment, ADA's controller
    # adds just the strength that what D sees still lacks.
    "ada": AugmentationSpec(
        "ADA (Karras et al. 2020): its pipeline on every discriminator input, real and fake, with a "
        "probability p that a controller steers so that E[sign(D(real))] stays at --ada-target",
        side="discriminator",
        options=("ada_ops", *CONTROLLER_OPTIONS),
        build=_build_ada,
    ),
}


def augmentation_choices() -> dict[str, str]:
    """Every `--augment` name with its one-line description, `none` first (for --help)."""
    return {"none": NONE_DESCRIPTION, **{name: spec.description for name, spec in AUGMENTATIONS.items()}}


def parse_augment(spec: str) -> list[str]:
    """Split an `--augment` value into registered names; `none` stands alone."""
    names = [name.strip() for name in spec.split("+")]
    unknown = [name for name in names if name != "none" and name not in AUGMENTATIONS]
    if unknown or not spec.strip():
        raise ConfigError(
            f"--augment {spec!r}: unknown augmentation {', '.join(unknown) or '(empty)'}; "
            f"choose from {', '.join(augmentation_choices())} (join several with '+') {PLUGIN_HINT}"
        )
    if "none" in names and len(names) > 1:
        raise ConfigError(
            f"--augment {spec!r}: 'none' cannot be combined; drop it or use --augment none alone"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"--augment {spec!r} names an augmentation twice; list each once")
    data_side = [name for name in names if name in AUGMENTATIONS and AUGMENTATIONS[name].side == "data"]
    if len(data_side) > 1:
        raise ConfigError(
            f"--augment {spec!r}: {' and '.join(data_side)} are two choices of the same augmenter; "
            "keep one of them"
        )
    return names


def is_data_side(names: Collection[str]) -> bool:
    return any(AUGMENTATIONS[name].side == "data" for name in names if name in AUGMENTATIONS)


def is_discriminator_side(names: Collection[str]) -> bool:
    return any(AUGMENTATIONS[name].side == "discriminator" for name in names if name in AUGMENTATIONS)


def augmentation_fits(name: str, data_kind: str) -> bool:
    """Whether the augmentation `name` works on data of `data_kind` (every one works on images)."""
    return data_kind == "image" or AUGMENTATIONS[name].sequence_augmenter is not None


def augmenter_family(names: Collection[str], data_kind: str = "image") -> str | None:
    """The autoencoder family the augmentations run: a data-side one's, which ae-d then shares.

    The family follows the data: on series, the augmentation's sequence augmenter (`rae` for `ae`).
    """
    specs = sorted((AUGMENTATIONS[name] for name in names if name in AUGMENTATIONS), key=lambda s: s.side)
    families = (spec.augmenter if data_kind == "image" else spec.sequence_augmenter for spec in specs)
    return next((family for family in families if family is not None), None)


def needs_augmenter(names: Collection[str]) -> bool:
    return augmenter_family(names) is not None


def is_online(names: Collection[str], mode: str | None) -> bool:
    return is_data_side(names) and mode != "offline"


@dataclass(frozen=True)
class AugmentPlan:
    """What `--augment` and its options ask for, validated and with defaults filled in."""

    names: tuple[str, ...]
    p: float | str  # a number, or AUTO: ADA's controller sets it
    mode: str
    pool: int | None
    anneal: bool
    noise: float
    interp: float
    checkpoint: str | None
    augmenter_family: str  # the family the augmenter is (or would be) built as
    augmenter_steps: int
    augmenter_width: int
    augmenter_latent_dim: int
    diffaug_policy: str
    ada_target: float
    ada_interval: int
    ada_kimg: float
    ada_ops: str | None
    diffaug_translation: float
    diffaug_cutout: float
    # The augmentation options this plan reads, with their values: what config.yaml records.
    options: dict[str, Any]

    @property
    def data_side(self) -> bool:
        return is_data_side(self.names)

    @property
    def discriminator_side(self) -> bool:
        return is_discriminator_side(self.names)

    @property
    def needs_augmenter(self) -> bool:
        return needs_augmenter(self.names)

    @property
    def online(self) -> bool:
        return is_online(self.names, self.mode)

    @property
    def adaptive(self) -> bool:
        """Whether ADA's controller runs: for `ada`, or for `--augment-p auto`."""
        return "ada" in self.names or self.p == AUTO

    def config_values(self) -> dict[str, Any]:
        """Every augmentation option: the value used, or None for one no chosen augmentation reads."""
        return {key: self.options.get(key) for key in DEFAULTS}


def options_used_by(names: Collection[str], mode: str | None) -> set[str]:
    """The augmentation options that the augmentations `names` (in `--augment-mode mode`) read."""
    used: set[str] = set()
    for name in names:
        if name in AUGMENTATIONS:
            used |= AUGMENTATIONS[name].options_read(mode)
    return used


def _given(config: RunConfig, option: str) -> bool:
    """Whether the user set `option`: RunConfig keeps None for an augmentation option left to its default."""
    return getattr(config, option) is not None


def _check_adaptive(config: RunConfig, plan_names: tuple[str, ...], used: set[str]) -> bool:
    """ADA's controller (`ada`, `--augment-p auto`) needs online replacement and real/fake logits; returns
    whether `--augment-p auto` is in force, which reads the controller's options and rules out annealing."""
    auto_p = config.augment_p == AUTO and "augment_p" in used
    if config.augment_p == AUTO and config.augment_mode == "offline" and is_data_side(plan_names):
        raise ConfigError(
            "--augment-p auto steers the online replacement, and an offline pool is fixed; drop "
            "--augment-mode offline or give --augment-p a number"
        )
    adaptive = [name for name in plan_names if name == "ada"] + (["--augment-p auto"] if auto_p else [])
    if adaptive and not MODELS[config.model].real_logits:
        with_logits = [name for name, spec in MODELS.items() if spec.real_logits]
        raise ConfigError(
            f"{' and '.join(adaptive)} {agree(adaptive, 'steers', 'steer')} p by the sign of a "
            f"discriminator's real/fake logits, and --model {config.model} has none; "
            f"use --model {' or '.join(with_logits)}"
        )
    if auto_p and config.augment_anneal:
        raise ConfigError(
            "--augment-anneal takes a fixed --augment-p to zero; with --augment-p auto the controller "
            "sets p: drop one of them"
        )
    return auto_p


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


def _unread_diffaug_ratios(config: RunConfig, policy: tuple[str, ...], drop_unused: bool) -> set[str]:
    """The ratio options whose operation the DiffAugment policy leaves out: read by nothing, so one given
    is an error unless `drop_unused`."""
    unread: set[str] = set()
    for operation, option in DIFFAUG_RATIO_OPTIONS.items():
        if operation in policy:
            continue
        unread.add(option)
        if _given(config, option) and not drop_unused:
            raise ConfigError(
                f"{flag(option)} sizes DiffAugment's {operation}, which --diffaug-policy "
                f"{','.join(policy)} leaves out; drop it or add {operation} to --diffaug-policy"
            )
    return unread


def _check_stray_options(config: RunConfig, used: set[str], drop_unused: bool) -> None:
    """Every augmentation option given must be read by the chosen augmentations (unless `drop_unused`)."""
    if _given(config, "augment_pool") and "augment_mode" in used and "augment_pool" not in used:
        raise ConfigError("--augment-pool sizes the offline pool; add --augment-mode offline or drop it")
    stray = [option for option in DEFAULTS if _given(config, option) and option not in used]
    if stray and not drop_unused:
        flags = ", ".join(flag(option) for option in stray)
        raise ConfigError(
            f"{flags} {agree(stray, 'does', 'do')} nothing with --augment {config.augment}"
            f"{' --augment-mode offline' if config.augment_mode == 'offline' else ''}; drop "
            + agree(
                stray,
                "it, or use the augmentation it belongs to",
                "them, or use the augmentations they belong to",
            )
            + " (see --help)"
        )


def _checked_values(config: RunConfig, plan_names: tuple[str, ...]) -> dict[str, Any]:
    """Every augmentation option's value (given, or its default), range-checked; ADA's ops normalised."""
    values = {
        key: (getattr(config, key) if _given(config, key) else default) for key, default in DEFAULTS.items()
    }
    for option in ("augment_p", "augment_interp", "ada_target"):
        if values[option] != AUTO and not 0.0 <= values[option] <= 1.0:
            raise ConfigError(f"{flag(option)} {values[option]} must lie in [0, 1]")
    if values["augment_noise"] < 0:
        raise ConfigError(f"--augment-noise {values['augment_noise']} must not be negative")
    if values["ada_kimg"] <= 0:
        raise ConfigError(f"--ada-kimg {values['ada_kimg']} must be positive (thousands of images)")
    if "ada" in plan_names and values["ada_ops"] is not None:
        values["ada_ops"] = ",".join(parse_ada_ops(values["ada_ops"]))
    for operation, option in DIFFAUG_RATIO_OPTIONS.items():
        if not 0.0 <= values[option] <= RATIO_LIMITS[operation]:
            raise ConfigError(
                f"{flag(option)} {values[option]} must lie in [0, {RATIO_LIMITS[operation]:g}] "
                f"(a fraction of the image size; 0 turns {operation} off)"
            )
    return values


def resolve_augment_plan(
    config: RunConfig, image_discriminator: bool, drop_unused: bool = False, data_kind: str = "image"
) -> AugmentPlan:
    """Check the augmentation options of a RunConfig against `--augment` and the model; fill defaults.

    Every option that the chosen augmentations would ignore is an error, so an ablation never runs with a
    setting the user believes is active; `drop_unused` leaves them out instead (a grid shares its options
    among cells of different augmentations, and checks that each is used by some cell). The plan's
    `options` hold the values used, for config.yaml. `image_discriminator`: whether the model is an
    `ImageDiscriminator` (`ModelSpec.image_discriminator`), the only kind discriminator-side ones act on.
    """
    names = parse_augment(config.augment)
    plan_names = tuple(name for name in names if name != "none")
    used = options_used_by(plan_names, config.augment_mode)
    if _check_adaptive(config, plan_names, used):
        used |= set(CONTROLLER_OPTIONS)
    _check_discriminator_side(config, plan_names, image_discriminator)
    if "diffaug" in plan_names:
        policy = parse_policy(config.diffaug_policy or DEFAULTS["diffaug_policy"])
        used -= _unread_diffaug_ratios(config, policy, drop_unused)
    _check_stray_options(config, used, drop_unused)
    values = _checked_values(config, plan_names)
    if "diffaug" in plan_names:
        values["diffaug_policy"] = ",".join(policy)
    return AugmentPlan(
        names=plan_names,
        p=values["augment_p"],
        mode=values["augment_mode"],
        pool=values["augment_pool"],
        anneal=bool(values["augment_anneal"]),
        noise=values["augment_noise"],
        interp=values["augment_interp"],
        checkpoint=values["augment_ckpt"],
        augmenter_family=augmenter_family(plan_names, data_kind) or ("ae" if data_kind == "image" else "rae"),
        augmenter_steps=values["augmenter_steps"],
        augmenter_width=values["augmenter_width"],
        augmenter_latent_dim=values["augmenter_latent_dim"],
        diffaug_policy=values["diffaug_policy"],
        ada_target=values["ada_target"],
        ada_interval=values["ada_interval"],
        ada_kimg=values["ada_kimg"],
        ada_ops=values["ada_ops"],
        diffaug_translation=values["diffaug_translation"],
        diffaug_cutout=values["diffaug_cutout"],
        # Only what an augmentation uses goes into config.yaml; the rest stays None (= not set).
        options={key: values[key] for key in DEFAULTS if key in used},
    )

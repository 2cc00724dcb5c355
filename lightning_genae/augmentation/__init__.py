"""Augmentation registry and the plan a run's `--augment` value stands for.

Names combine with '+': `ae+diffaug` trains the GAN on AE-augmented data and shows its discriminator
DiffAugment-ed inputs. Data-side augmentations (`ae`, `vae`) change what the DataModule yields and work
with every model; discriminator-side ones (`diffaug`, `ae-d`) need an adversarial model.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightning_genae.config import flag
from lightning_genae.errors import ConfigError

if TYPE_CHECKING:
    from lightning_genae.config import RunConfig

AUGMENTATIONS: dict[str, str] = {
    "none": "train on the data as it is",
    "ae": "an autoencoder trained on the training split encodes, perturbs and decodes part of each batch",
    "vae": "as ae, with a VAE as the augmenter (perturbs its posterior means)",
    "diffaug": "DiffAugment (color, translation, cutout) on every discriminator input, real and fake",
    "ae-d": "the frozen augmenter's encode-perturb-decode on discriminator inputs, real and fake",
}
DATA_SIDE = ("ae", "vae")
DISCRIMINATOR_SIDE = ("diffaug", "ae-d")

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
}
AUGMENTER_OPTIONS = (
    "augment_noise",
    "augment_interp",
    "augment_ckpt",
    "augmenter_steps",
    "augmenter_width",
    "augmenter_latent_dim",
)


def parse_augment(spec: str) -> list[str]:
    """Split an `--augment` value into registered names; `none` stands alone."""
    names = [name.strip() for name in spec.split("+")]
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown or not spec.strip():
        raise ConfigError(
            f"--augment {spec!r}: unknown augmentation {', '.join(unknown) or '(empty)'}; "
            f"choose from {', '.join(AUGMENTATIONS)} (join several with '+')"
        )
    if "none" in names and len(names) > 1:
        raise ConfigError(
            f"--augment {spec!r}: 'none' cannot be combined; drop it or use --augment none alone"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"--augment {spec!r} names an augmentation twice; list each once")
    if "ae" in names and "vae" in names:
        raise ConfigError(
            f"--augment {spec!r}: ae and vae are two choices of the same augmenter; keep one of them"
        )
    return names


def is_data_side(names: Collection[str]) -> bool:
    return any(name in DATA_SIDE for name in names)


def is_discriminator_side(names: Collection[str]) -> bool:
    return any(name in DISCRIMINATOR_SIDE for name in names)


def needs_augmenter(names: Collection[str]) -> bool:
    """Data-side augmentations and `ae-d` run the augmenter autoencoder."""
    return is_data_side(names) or "ae-d" in names


def is_online(names: Collection[str], mode: str | None) -> bool:
    return is_data_side(names) and mode != "offline"


@dataclass(frozen=True)
class AugmentPlan:
    """What `--augment` and its options ask for, validated and with defaults filled in."""

    names: tuple[str, ...]
    p: float
    mode: str
    pool: int | None
    anneal: bool
    noise: float
    interp: float
    checkpoint: str | None
    augmenter_family: str  # "ae" or "vae"
    augmenter_steps: int
    augmenter_width: int
    augmenter_latent_dim: int
    diffaug_policy: str
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

    def config_values(self) -> dict[str, Any]:
        """Every augmentation option: the value used, or None for one no chosen augmentation reads."""
        return {key: self.options.get(key) for key in DEFAULTS}


def options_used_by(names: Collection[str], mode: str | None) -> set[str]:
    """The augmentation options that the augmentations `names` (in `--augment-mode mode`) read."""
    online = is_online(names, mode)
    used: set[str] = set()
    if needs_augmenter(names):
        used |= set(AUGMENTER_OPTIONS)
    if is_data_side(names):
        used |= {"augment_mode"} | (set() if online else {"augment_pool"})
    if online or "ae-d" in names:
        used |= {"augment_p"}
    if online:
        used |= {"augment_anneal"}
    if "diffaug" in names:
        used |= {"diffaug_policy"}
    return used


def resolve_augment_plan(config: RunConfig, adversarial: bool, drop_unused: bool = False) -> AugmentPlan:
    """Check the augmentation options of a RunConfig against `--augment` and the model; fill defaults.

    Every option that the chosen augmentations would ignore is an error, so an ablation never runs with a
    setting the user believes is active; `drop_unused` leaves them out instead (a grid shares its options
    among cells of different augmentations, and checks that each is used by some cell). The plan's
    `options` hold the values used, for config.yaml.
    """
    names = parse_augment(config.augment)
    plan_names = tuple(name for name in names if name != "none")

    def given(option: str) -> bool:
        return getattr(config, option) is not None

    if not adversarial:
        d_side = [name for name in plan_names if name in DISCRIMINATOR_SIDE]
        if d_side:
            raise ConfigError(
                f"--augment {config.augment}: {', '.join(d_side)} augment(s) discriminator inputs, and "
                f"--model {config.model} has no discriminator; use --model gan or --augment ae/vae"
            )
    used = options_used_by(plan_names, config.augment_mode)
    if given("augment_pool") and "augment_mode" in used and "augment_pool" not in used:
        raise ConfigError("--augment-pool sizes the offline pool; add --augment-mode offline or drop it")
    stray = [option for option in DEFAULTS if given(option) and option not in used]
    if stray and not drop_unused:
        flags = ", ".join(flag(option) for option in stray)
        raise ConfigError(
            f"{flags} do(es) nothing with --augment {config.augment}"
            f"{' --augment-mode offline' if config.augment_mode == 'offline' else ''}; drop it, or use the "
            "augmentation it belongs to (see --help)"
        )

    values = {key: (getattr(config, key) if given(key) else default) for key, default in DEFAULTS.items()}
    for option in ("augment_p", "augment_interp"):
        if not 0.0 <= values[option] <= 1.0:
            raise ConfigError(f"{flag(option)} {values[option]} must lie in [0, 1]")
    if values["augment_noise"] < 0:
        raise ConfigError(f"--augment-noise {values['augment_noise']} must not be negative")
    if "diffaug" in plan_names:
        from lightning_genae.augmentation.diffaug import parse_policy

        values["diffaug_policy"] = ",".join(parse_policy(values["diffaug_policy"]))
    return AugmentPlan(
        names=plan_names,
        p=values["augment_p"],
        mode=values["augment_mode"],
        pool=values["augment_pool"],
        anneal=bool(values["augment_anneal"]),
        noise=values["augment_noise"],
        interp=values["augment_interp"],
        checkpoint=values["augment_ckpt"],
        augmenter_family="vae" if "vae" in plan_names else "ae",
        augmenter_steps=values["augmenter_steps"],
        augmenter_width=values["augmenter_width"],
        augmenter_latent_dim=values["augmenter_latent_dim"],
        diffaug_policy=values["diffaug_policy"],
        # Only what an augmentation uses goes into config.yaml; the rest stays None (= not set).
        options={key: values[key] for key in DEFAULTS if key in used},
    )

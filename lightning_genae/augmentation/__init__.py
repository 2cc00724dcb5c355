"""Data augmentation registry. Names combine with '+' (e.g. `ae+diffaug` once those land)."""

from __future__ import annotations

from lightning_genae.errors import ConfigError

AUGMENTATIONS: dict[str, str] = {
    "none": "train on the data as it is",
}


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
    return names

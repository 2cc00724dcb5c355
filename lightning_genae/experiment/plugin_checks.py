"""The command line's checks of registered plug-ins' options: every option is one flag of run.py, and one a
family shares with another family must have its type. The library registers plug-ins without them."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from lightning_genae.augmentation import AUGMENTATIONS, BUILT_IN_AUGMENTATIONS
from lightning_genae.datamodules import DATASETS
from lightning_genae.errors import ConfigError
from lightning_genae.models import MODELS
from lightning_genae.plugin_options import PluginOptions


def _is_plugin(name: str, spec: Any) -> bool:
    """Whether `name` was registered from outside the package (a built-in's location is relative)."""
    if name in BUILT_IN_AUGMENTATIONS and spec is AUGMENTATIONS.get(name):
        return False
    return not getattr(spec, "location", "").startswith(".")


def check_registered_options() -> None:
    """Refuse, in one line naming it, a registered family's, dataset's or augmentation's option that would
    not be a flag of its own."""
    for kind, registry in (("model", MODELS), ("dataset", DATASETS), ("augmentation", AUGMENTATIONS)):
        for name, spec in registry.items():
            if _is_plugin(name, spec):
                _check_option_names(kind, name, spec.options)
    declared = {name: spec.options.types() for name, spec in MODELS.items()}
    for name, kinds in declared.items():
        if not _is_plugin(name, MODELS[name]):
            continue
        for other, other_kinds in declared.items():
            for option in set(kinds) & set(other_kinds):
                if kinds[option] != other_kinds[option]:
                    raise ConfigError(
                        f"model {name!r}: option {option} is {kinds[option]} here but {other_kinds[option]} "
                        f"in {other}; rename it"
                    )


def _check_option_names(kind: str, name: str, options: type[PluginOptions]) -> None:
    """Every option of a plug-in is declared with `option(default, help)`: its flag needs the help text.
    (A name another flag has is refused by the parser, `arguments.build_parser`.)"""
    for declared_field in fields(options):
        if "help" not in declared_field.metadata:
            raise ConfigError(
                f"{kind} {name!r}: option {declared_field.name} is a plain dataclass field; "
                "declare it with option(default, help) from lightning_genae.plugin_options"
            )

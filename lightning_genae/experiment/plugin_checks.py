"""The command line's checks of registered plug-ins' options: every option is one flag of run.py (and of the
feature-classifier command for a dataset's), so a plug-in's option may not take the name of a run option,
another kind's option, a flag of the command, or be the --no-X of a yes/no option; one a family shares with
another family must have its type. The library registers plug-ins without them (its callers pass keywords)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from lightning_genae.augmentation import AUGMENTATIONS, BUILT_IN_AUGMENTATIONS, augmentation_options
from lightning_genae.datamodules import DATASETS, dataset_options
from lightning_genae.datamodules.options import CLASSIFIER_COMMAND_OPTIONS
from lightning_genae.errors import ConfigError
from lightning_genae.experiment.config import COMMAND_LINE_ONLY, CONFIG_TYPES
from lightning_genae.models import MODELS
from lightning_genae.plugin_options import PluginOptions, flag


def _is_plugin(name: str, spec: Any) -> bool:
    """Whether `name` was registered from outside the package (a built-in family or dataset has a relative
    location, `.ae:...`)."""
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
    for name, spec in DATASETS.items():
        if not _is_plugin(name, spec):
            continue
        for option in spec.options.types():
            if option in CLASSIFIER_COMMAND_OPTIONS:
                raise ConfigError(
                    f"dataset {name!r}: option {option} is a flag of the feature-classifier command; "
                    "rename it"
                )
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


# Who declares an option, as a refusal names it.
_OWNER_WORDS = {
    "run": "a run option",
    "model": "a model family's option",
    "dataset": "a dataset's option",
    "augmentation": "an augmentation's option",
}


def _declared_options() -> dict[str, dict[str, Any]]:
    """Every declared option's type, by who declares it: the run, the families, datasets, augmentations."""
    families: dict[str, Any] = {}
    for spec in MODELS.values():
        families.update(spec.options.types())
    return {
        "run": dict(CONFIG_TYPES),
        "model": families,
        "dataset": {key: value for key, (value, _) in dataset_options().items()},
        "augmentation": {key: value for key, (value, _) in augmentation_options().items()},
    }


def _check_option_names(kind: str, name: str, options: type[PluginOptions]) -> None:
    """A plug-in's options may not take the name of a run option, another kind's option or a flag of
    run.py, nor be the --no-X of a yes/no option."""
    for declared_field in fields(options):
        if "help" not in declared_field.metadata:
            # Its flag would have no help text, its value no checks: every run's parser would fail on it.
            raise ConfigError(
                f"{kind} {name!r}: option {declared_field.name} is a plain dataclass field; "
                "declare it with option(default, help) from lightning_genae.plugin_options"
            )
    _check_defaults(kind, name, options)
    declared = _declared_options()
    owners = dict.fromkeys(COMMAND_LINE_ONLY, "a flag of run.py")
    for owner, types in declared.items():
        if owner != kind:
            owners.update(dict.fromkeys(types, _OWNER_WORDS[owner]))
    for option in options.types():
        if option in owners:
            raise ConfigError(f"{kind} {name!r}: option {option} is {owners[option]}; rename it")
    _check_negations(
        kind, name, options, {key: value for types in declared.values() for key, value in types.items()}
    )


def _check_defaults(kind: str, name: str, options: type[PluginOptions]) -> None:
    """Each option's default must be a value of its declared type and pass its own checks, as a value
    given for it must: otherwise every run of the plug-in is refused, blaming the user for a value the
    declaration chose (or for a type, such as dict, that no flag or config file can give)."""
    for declared_field in fields(options):
        option_name = declared_field.name
        try:
            options.check_own(option_name, declared_field.default)
        except ConfigError as error:
            raise ConfigError(
                f"{kind} {name!r}: the default of option {option_name} is not a value it "
                f"takes ({error}); fix its declaration"
            ) from None


def _check_negations(kind: str, name: str, options: type[PluginOptions], declared: dict[str, Any]) -> None:
    """A yes/no option X is also the flag --no-X, which turns it off: no option may be named no_X too."""
    every = {**declared, **options.types()}
    for option in options.types():
        for yes, no in ((option, f"no_{option}"), (option.removeprefix("no_"), option)):
            if yes != no and yes in every and no in every and every[yes] is bool:
                raise ConfigError(
                    f"{kind} {name!r}: option {no} would be {flag(no)}, the flag that turns "
                    f"the yes/no option {yes} off; rename it"
                )

"""Plug-ins from outside the package: a family, a dataset, an augmentation or a metric, registered by name.

A plug-in is an importable Python module (installed, or on PYTHONPATH) that calls the `register_*`
functions below when it is imported. `run.py` imports, before it reads the command line, every module
named in `$GENAE_PLUGINS` (a comma list) and every module an installed distribution declares under the
entry-point group `lightning_genae.plugins`; its names then appear in `--help`, in the choices of
`--model`, `--data` and `--augment`, in grids and in `config.yaml`, exactly as the built-in ones. From
Python, importing the plug-in module is enough.

A registered thing is the same spec the built-ins use (`ModelSpec`, `DatasetSpec`, `AugmentationSpec`),
whose `location` names the class as `module:Class` by its full import name (a built-in's location is
relative to its package), imported on first use. A metric of generated against real samples in a
backbone's feature space is a `FeatureMetricSpec` (a function of the two feature sets and which side is
better), logged beside FD and KID. docs/plugins.md shows one of each added this way.
"""

from __future__ import annotations

import re
import typing
from dataclasses import fields
from typing import Any

from lightning_genae.augmentation import (
    AUGMENTATIONS,
    AugmentationSpec,
    Side,
    augmentation_options,
    option_classes,
)
from lightning_genae.config import COMMAND_LINE_ONLY, CONFIG_TYPES, flag
from lightning_genae.datamodules import DATASETS, DatasetSpec, dataset_options
from lightning_genae.datamodules.options import CLASSIFIER_COMMAND_OPTIONS
from lightning_genae.errors import ConfigError
from lightning_genae.metrics.feature_set import FEATURE_METRICS, FeatureMetricSpec
from lightning_genae.metrics.names import BACKBONES, KINDS, Direction, MetricKind, kind_spec
from lightning_genae.models import MODELS, FamilyOptions, ModelSpec
from lightning_genae.plugin_loading import ENTRY_POINT_GROUP, PLUGINS_VARIABLE, load_plugins
from lightning_genae.plugin_options import PLUGIN_OPTION_NAMES, PluginOptions, check_shared, type_name

__all__ = ["ENTRY_POINT_GROUP", "PLUGINS_VARIABLE", "load_plugins", "register_augmentation",
           "register_dataset", "register_metric", "register_model"]  # fmt: skip

# A name users type after --model/--data/--augment: lower case, digits, '_' and '-' ('+' joins augmentations).
_NAME = re.compile(r"[a-z][a-z0-9_-]*")
# A metric's name becomes part of `<split>/<name>_<backbone>`: lower case, digits and '_' only.
_METRIC_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _check_new(kind: str, name: str, registry: dict[str, Any], spec: Any, spec_type: type) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == "none":
        raise ConfigError(
            f"cannot register {kind} {name!r}: a name is lower case letters, digits, '_' or '-', starting "
            "with a letter, and not 'none'"
        )
    if name in registry:
        raise ConfigError(f"cannot register {kind} {name!r}: the name is taken; choose another")
    if not isinstance(spec, spec_type):
        raise ConfigError(
            f"cannot register {kind} {name!r}: expected a {spec_type.__name__}, got {type(spec).__name__}"
        )
    location = getattr(spec, "location", "module:Class")
    module, _, attribute = location.partition(":")
    if not module or module.startswith(".") or not attribute:
        raise ConfigError(
            f"cannot register {kind} {name!r}: location {location!r} must name the class as "
            "module:Class (the module's full import name, e.g. my_plugin.families:MyModule)"
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
                f"cannot register {kind} {name!r}: option {declared_field.name} is a plain dataclass field; "
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
            raise ConfigError(
                f"cannot register {kind} {name!r}: option {option} is {owners[option]}; rename it"
            )
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
                f"cannot register {kind} {name!r}: the default of option {option_name} is not a value it "
                f"takes ({error}); fix its declaration"
            ) from None


def _check_negations(kind: str, name: str, options: type[PluginOptions], declared: dict[str, Any]) -> None:
    """A yes/no option X is also the flag --no-X, which turns it off: no option may be named no_X too."""
    every = {**declared, **options.types()}
    for option in options.types():
        for yes, no in ((option, f"no_{option}"), (option.removeprefix("no_"), option)):
            if yes != no and yes in every and no in every and type_name(every[yes]) == "bool":
                raise ConfigError(
                    f"cannot register {kind} {name!r}: option {no} would be {flag(no)}, the flag that turns "
                    f"the yes/no option {yes} off; rename it"
                )


def register_model(name: str, spec: ModelSpec) -> None:
    """Add the family `name` (`--model name`): its LightningModule, options dataclass and description.

    Its options become flags beside the built-in families'; one that a built-in family or RunConfig
    already declares must have the same type (the command line has one flag per name).
    """
    _check_new("model", name, MODELS, spec, ModelSpec)
    if not (isinstance(spec.options, type) and issubclass(spec.options, FamilyOptions)):
        raise ConfigError(f"cannot register model {name!r}: its options must be a FamilyOptions dataclass")
    _check_option_names("model", name, spec.options)
    kinds = spec.options.types()
    declared = {other: other_spec.options.types() for other, other_spec in MODELS.items()}
    for option in fields(spec.options):
        for other, other_kinds in declared.items():
            if option.name in other_kinds and other_kinds[option.name] != kinds[option.name]:
                raise ConfigError(
                    f"cannot register model {name!r}: option {option.name} is {kinds[option.name]} here "
                    f"but {other_kinds[option.name]} in {other}; rename it"
                )
    _note_plugin_options(spec.options)
    MODELS[name] = spec


def register_dataset(name: str, spec: DatasetSpec) -> None:
    """Add the dataset `name` (`--data name`): its DataModule class, description, data kind and options.

    The options (`spec.options`, a `PluginOptions` dataclass; an image dataset's default is `ImageOptions`)
    become flags and config.yaml keys, and their values reach the DataModule's constructor as keywords. An
    option another dataset declares too is the same option, inherited from the class that declares it.
    """
    _check_new("dataset", name, DATASETS, spec, DatasetSpec)
    if not (isinstance(spec.options, type) and issubclass(spec.options, PluginOptions)):
        raise ConfigError(f"cannot register dataset {name!r}: its options must be a PluginOptions dataclass")
    _check_option_names("dataset", name, spec.options)
    for option in spec.options.types():
        if option in CLASSIFIER_COMMAND_OPTIONS:
            raise ConfigError(
                f"cannot register dataset {name!r}: option {option} is a flag of the feature-classifier "
                "command (python -m lightning_genae.metrics.classifier); rename it"
            )
    check_shared("dataset", name, spec.options, {other: known.options for other, known in DATASETS.items()})
    _note_plugin_options(spec.options)
    DATASETS[name] = spec


def register_augmentation(name: str, spec: AugmentationSpec) -> None:
    """Add the augmentation `name` (`--augment name`). A discriminator-side one gives `build(options,
    parts)`. Its options are a `PluginOptions` dataclass (`spec.options`): they become flags, config.yaml
    keys and checks as the built-ins' do, and a run that sets one that no chosen augmentation reads is
    refused. An option another augmentation declares too is the same option, inherited from the class that
    declares it (`--augment-p` from `StrengthOptions`)."""
    _check_new("augmentation", name, AUGMENTATIONS, spec, AugmentationSpec)
    if not (isinstance(spec.options, type) and issubclass(spec.options, PluginOptions)):
        raise ConfigError(
            f"cannot register augmentation {name!r}: its options must be a PluginOptions dataclass"
        )
    _check_option_names("augmentation", name, spec.options)
    check_shared("augmentation", name, spec.options, option_classes())
    sides = typing.get_args(Side)
    if spec.side not in sides:
        raise ConfigError(
            f"cannot register augmentation {name!r}: side {spec.side!r} is none of "
            f"{', '.join(map(repr, sides))}"
        )
    if spec.side == "discriminator" and spec.build is None:
        raise ConfigError(f"cannot register augmentation {name!r}: a discriminator-side one needs build")
    if spec.side == "data" and spec.augmenter is None:
        raise ConfigError(
            f"cannot register augmentation {name!r}: a data-side one runs an autoencoder family as its "
            "augmenter; name it (augmenter='ae')"
        )
    _note_plugin_options(spec.options)
    AUGMENTATIONS[name] = spec


def register_metric(name: str, spec: FeatureMetricSpec) -> None:
    """Add the feature-space metric `name`: logged as `<split>/<name>_<backbone>` beside fd and kid, for
    every backbone a run scores with, and tabled by ablations when it has a better side.

    The name may not be a metric kind the project already logs (`fd`, `loss`, ...), nor end in a
    backbone's name, which would make `<name>_<backbone>` ambiguous.
    """
    if not isinstance(spec, FeatureMetricSpec):
        raise ConfigError(
            f"cannot register metric {name!r}: expected a FeatureMetricSpec, got {type(spec).__name__}"
        )
    if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
        raise ConfigError(
            f"cannot register metric {name!r}: a metric name is lower case letters, digits or '_', starting "
            "with a letter"
        )
    if kind_spec(name) is not None:
        raise ConfigError(f"cannot register metric {name!r}: the name is taken; choose another")
    clashing = [backbone for backbone in BACKBONES if name.endswith("_" + backbone)]
    if clashing:
        raise ConfigError(
            f"cannot register metric {name!r}: a name ending in _{clashing[0]} reads as a backbone's; "
            "choose another"
        )
    if not callable(spec.compute):
        raise ConfigError(f"cannot register metric {name!r}: compute must be a function (real, generated)")
    if not isinstance(spec.direction, Direction):
        raise ConfigError(
            f"cannot register metric {name!r}: direction must be Direction.LOWER, Direction.HIGHER or "
            f"Direction.NONE, got {spec.direction!r}"
        )
    KINDS[name] = MetricKind(spec.direction, per_backbone=True)
    FEATURE_METRICS[name] = spec


def _note_plugin_options(options: type[PluginOptions] | None) -> None:
    """Record the option names `options` adds to those already registered (an option shared by
    subclassing a built-in class stays the built-in's)."""
    if options is None:
        return
    known = set(augmentation_options()) | set(dataset_options())
    for spec in MODELS.values():
        known |= {field.name for field in fields(spec.options)}
    PLUGIN_OPTION_NAMES.update(field.name for field in fields(options) if field.name not in known)

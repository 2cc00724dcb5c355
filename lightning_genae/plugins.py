"""Plug-ins from outside the package: a family, a dataset, an augmentation or a metric, registered by name.

A plug-in is an importable module that calls the `register_*` functions below when imported: `run.py`
imports every module named in `$GENAE_PLUGINS` (a comma list) and every entry point of the group
`lightning_genae.plugins` before it reads the command line, so its names appear in `--help`, the choices,
grids and `config.yaml` as the built-ins' do; from Python, importing the module is enough. A registered thing
is the spec the built-ins use (`ModelSpec`, `DatasetSpec`, `AugmentationSpec`, `FeatureMetricSpec`), whose
`location` names its class as `module:Class`. docs/plugins.md shows one of each.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from lightning_genae.augmentation import (
    AUGMENTATIONS,
    AugmentationSpec,
    augmentation_options,
    option_classes,
)
from lightning_genae.datamodules import DATASETS, DatasetSpec, dataset_options
from lightning_genae.errors import ConfigError
from lightning_genae.metrics.feature_set import FEATURE_METRICS, FeatureMetricSpec
from lightning_genae.metrics.names import BACKBONES, KINDS, MetricKind, kind_spec
from lightning_genae.models import MODELS, ModelSpec
from lightning_genae.plugin_loading import ENTRY_POINT_GROUP, PLUGINS_VARIABLE, load_plugins
from lightning_genae.plugin_options import PLUGIN_OPTION_NAMES, PluginOptions, check_shared

__all__ = ["ENTRY_POINT_GROUP", "PLUGINS_VARIABLE", "load_plugins", "register_augmentation",
           "register_dataset", "register_metric", "register_model"]  # fmt: skip

# A name users type after --model/--data/--augment: lower case, digits, '_' and '-' ('+' joins augmentations).
_NAME = re.compile(r"[a-z][a-z0-9_-]*")
# A metric's name becomes part of `<split>/<name>_<backbone>`: lower case, digits and '_' only.
_METRIC_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _check_new(kind: str, name: str, registry: dict[str, Any]) -> None:
    """A new name is one users can type after --model/--data/--augment, and no built-in's."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == "none":
        raise ConfigError(
            f"cannot register {kind} {name!r}: a name is lower case letters, digits, '_' or '-', starting "
            "with a letter, and not 'none'"
        )
    if name in registry:
        raise ConfigError(f"cannot register {kind} {name!r}: the name is taken; choose another")


def register_model(name: str, spec: ModelSpec) -> None:
    """Add the family `name` (`--model name`): its LightningModule, options dataclass and description.

    Its options become flags beside the built-in families'; one that a built-in family or RunConfig
    already declares must have the same type (the command line has one flag per name).
    """
    _check_new("model", name, MODELS)
    _note_plugin_options(spec.options)
    MODELS[name] = spec


def register_dataset(name: str, spec: DatasetSpec) -> None:
    """Add the dataset `name` (`--data name`): its DataModule class, description, data kind and options.

    The options (`spec.options`, a `PluginOptions` dataclass; an image dataset's default is `ImageOptions`)
    become flags and config.yaml keys, and their values reach the DataModule's constructor as keywords. An
    option another dataset declares too is the same option, inherited from the class that declares it.
    """
    _check_new("dataset", name, DATASETS)
    check_shared("dataset", name, spec.options, {other: known.options for other, known in DATASETS.items()})
    _note_plugin_options(spec.options)
    DATASETS[name] = spec


def register_augmentation(name: str, spec: AugmentationSpec) -> None:
    """Add the augmentation `name` (`--augment name`). A discriminator-side one gives `build(options,
    parts)`. Its options are a `PluginOptions` dataclass (`spec.options`): they become flags, config.yaml
    keys and checks as the built-ins' do, and a run that sets one that no chosen augmentation reads is
    refused. An option another augmentation declares too is the same option, inherited from the class that
    declares it (`--augment-p` from `StrengthOptions`)."""
    _check_new("augmentation", name, AUGMENTATIONS)
    check_shared("augmentation", name, spec.options, option_classes())
    # Either mistake would leave the run unaugmented under the augmentation's name.
    if spec.side == "discriminator" and spec.build is None:
        raise ConfigError(f"cannot register augmentation {name!r}: a discriminator-side one needs build")
    if spec.side == "data" and spec.augmenter is None:
        # Without one, the run would train on the data as it is under the augmentation's name.
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

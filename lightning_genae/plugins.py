"""Plug-ins: a module that calls the `register_*` functions below when imported ($GENAE_PLUGINS or the
`lightning_genae.plugins` entry points), with the spec a built-in uses; docs/plugins.md shows one of each."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields

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
from lightning_genae.plugin_options import PLUGIN_OPTION_NAMES, PluginOptions, check_shared

# A name users type after --model/--data/--augment: lower case, digits, '_' and '-' ('+' joins augmentations).
_NAME = re.compile(r"[a-z][a-z0-9_-]*")
# A metric's name becomes part of `<split>/<name>_<backbone>`: lower case, digits and '_' only.
_METRIC_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _check_new(kind: str, name: str, taken: Callable[[str], bool], pattern: re.Pattern = _NAME) -> None:
    """A new name is one users can type (`pattern`, not 'none'), and not `taken`; a metric's reads as no
    backbone's (`<name>_<backbone>` would be ambiguous)."""
    if not isinstance(name, str) or not pattern.fullmatch(name) or name == "none":
        letters = "'_' or '-'" if pattern is _NAME else "or '_'"
        why = f"a name is lower case letters, digits, {letters}, starting with a letter, and not 'none'"
    elif taken(name):
        why = "the name is taken; choose another"
    elif kind == "metric" and (clash := [b for b in BACKBONES if name.endswith("_" + b)]):
        why = f"a name ending in _{clash[0]} reads as a backbone's; choose another"
    else:
        return
    raise ConfigError(f"cannot register {kind} {name!r}: {why}")


def register_model(name: str, spec: ModelSpec) -> None:
    """Add the family `name` (`--model name`); its options become flags beside the built-in families' (one
    flag per name, typed as the first family that declares it)."""
    _check_new("model", name, MODELS.__contains__)
    _note_plugin_options(spec.options)
    MODELS[name] = spec


def register_dataset(name: str, spec: DatasetSpec) -> None:
    """Add the dataset `name` (`--data name`); its options (flags and config.yaml keys) reach the DataModule's
    constructor as keywords, and one another dataset declares too is inherited from its declaring class."""
    _check_new("dataset", name, DATASETS.__contains__)
    check_shared("dataset", name, spec.options, {other: known.options for other, known in DATASETS.items()})
    _note_plugin_options(spec.options)
    DATASETS[name] = spec


def register_augmentation(name: str, spec: AugmentationSpec) -> None:
    """Add the augmentation `name` (`--augment name`); a discriminator-side one gives `build(options, parts)`.
    Its options are as a dataset's (`register_dataset`), `--augment-p` inherited from `StrengthOptions`."""
    _check_new("augmentation", name, AUGMENTATIONS.__contains__)
    check_shared("augmentation", name, spec.options, option_classes())
    # Without its part the run would be unaugmented under the augmentation's name.
    part = {"discriminator": ("build", spec.build), "data": ("augmenter", spec.augmenter)}.get(spec.side)
    if part is not None and part[1] is None:
        raise ConfigError(f"cannot register augmentation {name!r}: a {spec.side}-side one needs {part[0]}")
    _note_plugin_options(spec.options)
    AUGMENTATIONS[name] = spec


def register_metric(name: str, spec: FeatureMetricSpec) -> None:
    """Add the feature-space metric `name`, logged as `<split>/<name>_<backbone>` beside fd and kid (and
    tabled by ablations when it has a better side); not a metric kind already logged (`fd`, `loss`)."""
    _check_new("metric", name, lambda new: kind_spec(new) is not None, _METRIC_NAME)
    KINDS[name] = MetricKind(spec.direction, BACKBONES)
    FEATURE_METRICS[name] = spec


def _note_plugin_options(options: type[PluginOptions]) -> None:
    """Record the option names `options` adds; one inherited from a built-in class stays the built-in's."""
    known = set(augmentation_options()) | set(dataset_options())
    for spec in MODELS.values():
        known |= {field.name for field in fields(spec.options)}
    PLUGIN_OPTION_NAMES.update(field.name for field in fields(options) if field.name not in known)

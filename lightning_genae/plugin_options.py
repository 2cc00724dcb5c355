"""Typed options of a plug-in: one frozen dataclass whose fields declare each option's type, default, `--help`
line and range; standard library only, so `--help` answers without torch."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import math
import reprlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lightning_genae.errors import PLUGIN_HINT, ConfigError, OptionError, UnknownName, describe_error

_Spec = TypeVar("_Spec")


def did_you_mean(name: object, choices: Iterable[object]) -> str:
    """` (did you mean 'vae'?)` where `name` resembles one of `choices`, else nothing."""
    close = difflib.get_close_matches(str(name), [str(choice) for choice in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(dict[str, _Spec]):
    """Plug-ins by name (`MODELS`, `DATASETS`, `AUGMENTATIONS`); an unknown name is `UnknownName` of the
    `option` that names one (`model`: `--model` at the command line)."""

    def __init__(self, option: str, entries: Mapping[str, _Spec]) -> None:
        super().__init__(entries)
        self.option = option

    def __missing__(self, name: str) -> _Spec:
        # `MODELS["masked_ae"]` finds what `run.py --model masked_ae` does.
        from lightning_genae.plugin_loading import load_plugins

        load_plugins()
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        raise UnknownName(
            self.option,
            f"{name!r} is unknown{did_you_mean(name, self)}; choose from {', '.join(self)} {PLUGIN_HINT}",
        )


# An integer option larger than this is a typo, refused before it fails far from its cause (an overflow).
INT_LIMIT = 2**31 - 1
# The value of a probability option that ADA's controller sets during training (`--augment-p auto`).
AUTO = "auto"

# The options plug-ins declared that no built-in family, dataset or augmentation has (filled by
# `lightning_genae.plugins.register_*`): config.yaml leaves them out where unset, so a run that used no
# plug-in re-runs without it.
PLUGIN_OPTION_NAMES: set[str] = set()
# File and folder options (`path=True`), added as their classes are defined: made absolute, compared as paths.
PATH_OPTION_NAMES: set[str] = set()


def flag(name: str) -> str:
    """`max_steps` -> `--max-steps`: how an option is spelled on the command line."""
    return "--" + name.replace("_", "-")


def typed_flag(name: str, value: Any) -> str:
    """The flag as typed for `value`: a switch turned off is `--no-...`, everything else `flag(name)`."""
    return flag(f"no_{name}") if value is False else flag(name)


def shown_default(name: str, spec: dataclasses.Field) -> str | None:
    """An option's default as `--help` and a refusal show it (its owner's words where it computes it, a switch
    as its flag, a list as a comma list); None where it is unset."""
    if spec.metadata.get("shown_default") is not None:
        return spec.metadata["shown_default"]
    value = spec.default_factory() if callable(spec.default_factory) else spec.default
    if value is None or isinstance(value, bool):
        return None if value is None else typed_flag(name, value)
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def help_with_default(name: str, spec: dataclasses.Field) -> str:
    """An option's `--help` line with its default (`shown_default`)."""
    shown = shown_default(name, spec)
    return spec.metadata.get("help", "") + (f" [default: {shown}]" if shown is not None else "")


def is_of_type(kind: Any, value: Any) -> bool:
    """Whether `value` is one an option of type `kind` holds (`int | None`, `float | Literal["auto"]`,
    `list[str]`): a bool is no number, an int is a float."""
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(is_of_type(argument, value) for argument in arguments)
    if origin is typing.Literal:
        return value in arguments
    if kind is float:
        kind = (int, float)
    elif kind is type(None):
        return value is None
    if isinstance(value, bool) and kind is not bool:
        return False
    if not isinstance(value, origin or kind):
        return False
    return origin is not list or all(is_of_type(arguments[0], item) for item in value)


def type_text(kind: Any) -> str:
    """`int`, `float | Literal['auto']`: an option's type as a refusal names it."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " | ".join(map(type_text, typing.get_args(kind)))
    if kind is type(None):
        return "None"
    return kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 2, 4, 4
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60
# A value as a refusal quotes it: its repr, cut short (YAML aliases can make it gigabytes).
shown_value = _SHORT_REPR.repr


def option(
    default: Any,
    help: str,
    *,
    at_least: float | None = None,
    above: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    path: bool = False,
    tunable: bool = False,
    shown_default: str | None = None,
    canonical: Callable[[Any], Any] | None = None,
    changeable_on_resume: bool = False,
    group: str | None = None,
) -> Any:
    """An option: its default (a callable makes it), `--help` line and range. `path`: names a file; `tunable`:
    a grid may list candidates; `shown_default`: `--help`'s default where the owner computes it; `canonical`:
    a value's stored form (or its OptionError); `changeable_on_resume`; `group`: its `--help` section."""
    # Every argument but the default, by name: the field's metadata.
    metadata = {name: value for name, value in locals().items() if name != "default"}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


def literal_choices(kind: Any) -> tuple[Any, ...]:
    """The values a `Literal` (or `Literal | None`) option may take; a `float | Literal["auto"]` has none."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        not_none = [argument for argument in typing.get_args(kind) if argument is not type(None)]
        if len(not_none) != 1:
            return ()
        kind = not_none[0]
    return tuple(typing.get_args(kind)) if typing.get_origin(kind) is typing.Literal else ()


def with_default(options: type[PluginOptions], name: str, default: Any) -> Any:
    """Option `name` of `options` with another default (same help line and range), for a subclass."""
    inherited = {spec.name: spec for spec in dataclasses.fields(options)}[name]
    return field(default=default, metadata=inherited.metadata)


# Resolving annotations is the costly part of reading options, asked for the same classes many times.
_type_hints = functools.cache(typing.get_type_hints)


def _range_problem(value: float, spec: dataclasses.Field) -> str | None:
    """What puts `value` outside its option's range, with the option's default, or None. NaN compares False
    with every bound and inf passes a lower one, so finiteness comes first."""
    at_least, above, below, at_most = map(spec.metadata.get, ("at_least", "above", "below", "at_most"))
    if isinstance(value, float) and not math.isfinite(value):
        problem = f"must be a finite number, got {value}"
    elif isinstance(value, int) and at_most is None and value > INT_LIMIT:
        problem = f"must be at most {INT_LIMIT:,}, got {value:,}"
    elif (
        (at_least is not None and value < at_least)
        or (above is not None and value <= above)
        or (below is not None and value >= below)
        or (at_most is not None and value > at_most)
    ):
        low = f"[{at_least}" if at_least is not None else (f"({above}" if above is not None else "(-inf")
        high = f"{at_most}]" if at_most is not None else (f"{below})" if below is not None else "inf)")
        problem = f"must lie in {low}, {high}, got {value}"
    else:
        return None
    shown = shown_default(spec.name, spec)
    return problem if shown is None else f"{problem}; the default is {shown}"


@dataclass(frozen=True)
class PluginOptions:
    """Base of every plug-in's options class: plain values declared with `option(...)` (so a checkpoint
    rebuilds them); checks of several options together go in the subclass's `__post_init__`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Before @dataclass runs, the class body's `option(...)` fields are still Field objects here.
        PATH_OPTION_NAMES.update(
            name
            for name, value in vars(cls).items()
            if isinstance(value, dataclasses.Field) and value.metadata.get("path")
        )

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            object.__setattr__(self, spec.name, self._own_check(spec, getattr(self, spec.name)))

    @classmethod
    def changeable_on_resume(cls) -> tuple[str, ...]:
        """The options a resumed run may change (`option(..., changeable_on_resume=True)`)."""
        return tuple(
            spec.name for spec in dataclasses.fields(cls) if spec.metadata.get("changeable_on_resume")
        )

    @classmethod
    def passing_values(cls, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """The values of this class's options that pass their own checks, to decide what a run reads before
        any value is refused; None where a choice fails, since the choice decides what is read."""
        known = {name: value for name, value in values.items() if name in cls.__dataclass_fields__}
        passing = {}
        for name, value in known.items():
            try:
                cls._own_check(cls.__dataclass_fields__[name], value)
            except ConfigError:
                continue
            passing[name] = value
        if any(cls.choices(name) for name in set(known) - set(passing)):
            return None
        return passing

    @classmethod
    def _own_check(cls, spec: dataclasses.Field, value: Any) -> Any:
        """The value as stored (`canonical`), checked against its option alone: type or choice, then range."""
        kind = cls.types()[spec.name]
        if not is_of_type(kind, value):
            choices = literal_choices(kind)
            takes = f"one of: {', '.join(map(str, choices))}" if choices else f"of type {type_text(kind)}"
            problem = f"{'null' if value is None else shown_value(value)} is not {takes}"
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            problem = _range_problem(value, spec)
        else:
            problem = None
        if problem:
            raise OptionError(spec.name, problem)
        canonical = spec.metadata.get("canonical")
        return canonical(value) if canonical is not None and value is not None else value

    @classmethod
    def types(cls) -> dict[str, Any]:
        """Each option's type, resolved (`Literal[...]` for a choice)."""
        return dict(_type_hints(cls))

    @classmethod
    def choices(cls, name: str) -> tuple[Any, ...]:
        return literal_choices(_type_hints(cls)[name])

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> PluginOptions:
        """Options from plain values, defaults filled in; a name no option has is refused."""
        unknown = sorted(set(values) - set(_type_hints(cls)))
        if unknown:
            hint = did_you_mean(unknown[0], _type_hints(cls))
            raise OptionError(unknown[0], f"is not an option of {cls.__name__}{hint}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def unread(self) -> dict[str, str]:
        """Options these values leave unread (giving one would silently do nothing), each with its fix."""
        return {}


def option_specs(classes: Mapping[str, type[PluginOptions]]) -> dict[str, tuple[Any, dataclasses.Field]]:
    """Every option of `classes` (owner name -> options class), merged by name: (type, field), each class's
    as its declarations read: its own first, then each base's in MRO order (a dataclass's are the reverse)."""
    merged: dict[str, tuple[Any, dataclasses.Field]] = {}
    for options in classes.values():
        order: dict[str, int] = {}
        for klass in options.__mro__:
            for name in vars(klass).get("__annotations__", {}):
                order.setdefault(name, len(order))
        for spec in sorted(dataclasses.fields(options), key=lambda spec: order[spec.name]):
            merged.setdefault(spec.name, (options.types()[spec.name], spec))
    return merged


def declaring_class(options: type[PluginOptions], name: str) -> type[PluginOptions]:
    """The class in `options`' bases (or itself) whose own body declares the option `name`."""
    return next(klass for klass in options.__mro__ if name in vars(klass).get("__annotations__", {}))


def check_shared(
    kind: str, name: str, options: type[PluginOptions], registered: Mapping[str, type[PluginOptions]]
) -> None:
    """An option that a registered plug-in of the same kind declares too is one flag: the new one must
    inherit it from the declaring class (as the built-ins share `--augment-p`), not declare a look-alike."""
    for spec in dataclasses.fields(options):
        for other in registered.values():
            if spec.name not in other.types():
                continue
            owner = declaring_class(other, spec.name)
            if declaring_class(options, spec.name) is not owner:
                raise ConfigError(
                    f"cannot register {kind} {name!r}: option {spec.name} is {owner.__name__}'s; subclass "
                    f"{owner.__name__} to share it, or rename it"
                )


def import_location(location: str, package: str, base: type, what: str) -> type:
    """The class at a registry's `module:Class` location (relative to `package` for a built-in's ".ae"); a
    plug-in's that cannot be imported or is no `base` is a ConfigError naming `what` (a built-in's, a bug)."""
    module_name, _, class_name = location.partition(":")
    if module_name.startswith("."):
        return getattr(importlib.import_module(module_name, package=package), class_name)
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except Exception as error:  # noqa: BLE001 - missing, or the plug-in's own module failed as it ran
        found = error
    if not (isinstance(found, type) and issubclass(found, base)):
        why = describe_error(found) if isinstance(found, Exception) else f"not a {base.__name__} subclass"
        raise ConfigError(
            f"{what} is registered at {location!r}, which cannot be used ({why}); fix the location in the "
            f"plug-in's registration of {what}, or its module"
        ) from None
    return found

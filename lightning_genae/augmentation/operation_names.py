"""Comma-separated lists of operation names (`diffaug_policy`, `ada_ops`), checked the same way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lightning_genae.errors import OptionError


def _choices(operations: Mapping[str, str]) -> str:
    return f"choose from {', '.join(operations)} (comma-separated)"


def check_operation_names(
    names: Sequence[str], operations: Mapping[str, str], option: str, source: str
) -> tuple[str, ...]:
    """Reject unknown or repeated names with the OptionError of `option`, quoting `source`."""
    unknown = [name for name in names if name not in operations]
    if unknown:
        raise OptionError(
            option, f"{source!r}: unknown operation {', '.join(unknown)}; {_choices(operations)}"
        )
    repeated = sorted({name for name in names if names.count(name) > 1}, key=list(names).index)
    if repeated:
        raise OptionError(
            option,
            f"{source!r}: operation {', '.join(repeated)} listed more than once; list each once, "
            f"{_choices(operations)}",
        )
    return tuple(names)


def parse_operation_names(text: str, operations: Mapping[str, str], option: str) -> tuple[str, ...]:
    """Split `"color, translation"` into names, in the order given; an empty entry is an unknown name."""
    names = [name.strip() for name in text.split(",")]
    return check_operation_names(names, operations, option, text)

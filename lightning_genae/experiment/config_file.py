"""`--config FILE.yaml`: a YAML mapping of option names to values, read safely and checked.

Safe YAML only (no Python objects), a key given twice is an error (yaml.safe_load would keep the last),
dashes and underscores name the same option, and an unknown key is an error naming --help. A top-level key
that starts with `.` is no option: it holds values for YAML's anchors and merges (`.base: &base {...}`, then
`<<: *base`), the one place in a file of options where an anchor can be defined.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from lightning_genae.errors import PLUGIN_HINT, ConfigError, agree
from lightning_genae.experiment.config import CONFIG_FIELDS
from lightning_genae.plugin_options import did_you_mean

__all__ = ["ANCHOR_HOLDER", "DuplicateKey", "load_config_file"]

# How a key that only holds values for anchors begins (`.base: &base {...}`).
ANCHOR_HOLDER = "."


class DuplicateKey(yaml.YAMLError):
    """A key given twice in one YAML mapping: which value was meant cannot be known."""

    def __init__(self, key: Any, first_line: int, second_line: int) -> None:
        super().__init__(f"{key} at lines {first_line} and {second_line}")
        self.key, self.lines = key, (first_line, second_line)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a mapping holding a key twice is an error (safe_load keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base`: the mapping's own keys override the merged ones, as YAML says
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKey(key, seen[key], line)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_config_file(path: str | Path, known: Collection[str] = ()) -> dict[str, Any]:
    """Read a YAML config; keys are option names (dashes or underscores): RunConfig's or one in `known`."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "not a regular file" if path.exists() else "no such file"
        raise ConfigError(f"--config {path}: {what}; give the path of a YAML file (e.g. a run's config.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"--config {path}: not a text file (no UTF-8 YAML); give a YAML file such as a run's config.yaml"
        ) from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKey as error:
        first, second = error.lines
        raise ConfigError(
            f"--config {path}: {error.key} is given twice (lines {first} and {second}); keep one of them"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"--config {path}: not valid YAML{where}; fix the file or regenerate it with --print-config"
        ) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"--config {path}: expected a mapping of option: value; see --print-config for the format"
        )
    raw = {key: value for key, value in raw.items() if not str(key).startswith(ANCHOR_HOLDER)}
    values = {str(key).replace("-", "_"): value for key, value in raw.items()}
    if len(values) < len(raw):
        spellings: dict[str, list[str]] = {}
        for key in raw:
            spellings.setdefault(str(key).replace("-", "_"), []).append(str(key))
        twice = next(keys for keys in spellings.values() if len(keys) > 1)
        raise ConfigError(f"--config {path}: {' and '.join(twice)} name the same option; keep one of them")
    options = [*CONFIG_FIELDS, *known]
    unknown = sorted(str(key) for key in raw if str(key).replace("-", "_") not in options)
    if unknown:
        # Each as the file writes it, with the option it resembles.
        named = ", ".join(f"{key}{did_you_mean(key.replace('-', '_'), options)}" for key in unknown)
        raise ConfigError(
            f"--config {path}: unknown {agree(unknown, 'option', 'options')} {named}; "
            f"valid options are listed by --help {PLUGIN_HINT}"
        )
    if values.get("resume") is not None:
        # The command line alone decides whether a run continues: a file's resume would be read by
        # nothing, and a fresh run would train where a continued one is asked for. (A run's config.yaml
        # holds `resume: null`.)
        raise ConfigError(
            f"--config {path}: resume: {values['resume']} continues a run, which only the command line "
            f"does; drop it from the file and type --resume {values['resume']}"
            + (" --output DIR" if values["resume"] == "last" else "")
        )
    return values

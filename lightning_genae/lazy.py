"""Names a package exports but imports on first use (PEP 562): `run.py --help` answers without Lightning."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` giving each name of `exports` from its module, `package.<module>`."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__


def lazy_dir(module_globals: Mapping[str, Any], exports: Mapping[str, str]) -> Callable[[], list[str]]:
    """A module `__dir__` listing the lazy names beside the module's own, for dir(), help() and completion."""

    def __dir__() -> list[str]:
        return sorted({*module_globals, *exports})

    return __dir__

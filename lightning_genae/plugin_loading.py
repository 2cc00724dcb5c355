"""Finding and importing the plug-in modules, apart from the registries they fill, so that the classifier
command (below the registries) imports them too; importing a plug-in module is what registers it."""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from lightning_genae.errors import ConfigError, describe_error

PLUGINS_VARIABLE = "GENAE_PLUGINS"
ENTRY_POINT_GROUP = "lightning_genae.plugins"


def load_plugins() -> list[str]:
    """Import every plug-in module, $GENAE_PLUGINS's then the entry points', returning their names."""
    named = [name.strip() for name in os.environ.get(PLUGINS_VARIABLE, "").split(",") if name.strip()]
    declared = [entry.module for entry in entry_points(group=ENTRY_POINT_GROUP)]
    modules = list(dict.fromkeys(named + declared))
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - any failure of a user's module is one line
            # The installed command's import path holds no working folder, where python run.py's holds the
            # script's: a module of the working folder is found there only through PYTHONPATH.
            unfound = isinstance(error, ModuleNotFoundError) and error.name == module.partition(".")[0]
            where = " (a module in the working folder needs PYTHONPATH=. or an install)" if unfound else ""
            raise ConfigError(
                f"plug-in {module} (from ${PLUGINS_VARIABLE} or the {ENTRY_POINT_GROUP} entry points) "
                f"cannot be imported ({describe_error(error)}){where}; fix it, or remove it from there"
            ) from None
    return modules

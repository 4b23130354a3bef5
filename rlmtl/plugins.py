"""User plugins: modules named in `RLMTL_PLUGINS` are imported by the CLI and by every worker.

`RLMTL_PLUGINS=my_robots,my_weightings rlmtl eval runs/x` imports both modules before anything
else runs, so a backend, encoder or weighting they register (`@BACKENDS.register("name")`, ...)
can be named in a config. Worker processes are spawn-started and import nothing of the parent,
so they load the plugins again themselves (the variable is inherited).
"""

from __future__ import annotations

import importlib
import os

from rlmtl.errors import RlmtlError

PLUGINS_ENV = "RLMTL_PLUGINS"


def plugin_names(value: str | None = None) -> list[str]:
    """The module names in `value` (default: $RLMTL_PLUGINS), comma-separated."""
    text = os.environ.get(PLUGINS_ENV, "") if value is None else value
    return [name.strip() for name in text.split(",") if name.strip()]


def load_plugins(value: str | None = None) -> list[str]:
    """Import every plugin module (once); RlmtlError naming the module when one fails."""
    names = plugin_names(value)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:  # any import-time failure is the plugin's, reported as such
            raise RlmtlError(f"{PLUGINS_ENV}: cannot import plugin module {name!r} ({type(error).__name__}: {error})") from None
    return names

"""User plugins, loaded by the CLI and by every pool worker before anything else runs.

Two ways to name them, both loaded by `load_plugins`:

* installed packages declare entry points in the group `rlmtl.plugins` (in their pyproject.toml,
  `[project.entry-points."rlmtl.plugins"]`, e.g. `my_robots = "my_pkg.robots"`); each names a module or
  an object (`module:attr`) that rlmtl imports, and importing it registers its backends, encoders or
  weightings (`@BACKENDS.register("name")`, ...). rlmtl does not call the object.
* `RLMTL_PLUGINS=my_robots,my_weightings rlmtl eval runs/x` imports those modules.

Worker processes are spawn-started and import nothing of the parent, so they load the plugins again
themselves (the variable is inherited, the installed entry points are the same).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os

from rlmtl.errors import RlmtlError

PLUGINS_ENV = "RLMTL_PLUGINS"
ENTRY_POINT_GROUP = "rlmtl.plugins"


def _describe(error: BaseException) -> str:
    """An exception on one line: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def plugin_names(value: str | None = None) -> list[str]:
    """The module names in `value` (default: $RLMTL_PLUGINS), comma-separated."""
    text = os.environ.get(PLUGINS_ENV, "") if value is None else value
    return [name.strip() for name in text.split(",") if name.strip()]


def load_entry_points() -> list[str]:
    """Load every entry point of the group `rlmtl.plugins` (a module imports once per process); RlmtlError
    naming the entry point and its distribution when one fails. Returns their names."""
    names = []
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        distribution = getattr(entry_point, "dist", None)
        where = f"distribution {distribution.name!r}" if distribution is not None else "an unknown distribution"
        try:
            entry_point.load()
        except Exception as error:  # any failure while importing is the plugin's, reported as such
            raise RlmtlError(
                f"entry point {entry_point.name!r} = {entry_point.value!r} of {where} (group {ENTRY_POINT_GROUP}): "
                f"cannot load it ({_describe(error)})"
            ) from None
        names.append(entry_point.name)
    return names


def load_plugins(value: str | None = None) -> list[str]:
    """Load the installed `rlmtl.plugins` entry points, then import every `RLMTL_PLUGINS` module (`value`
    instead of the variable when given); RlmtlError naming the entry point or module when one fails.
    Returns the entry point and module names."""
    loaded = load_entry_points()
    for name in plugin_names(value):
        try:
            importlib.import_module(name)
        except Exception as error:  # any import-time failure is the plugin's, reported as such
            raise RlmtlError(f"{PLUGINS_ENV}: cannot import plugin module {name!r} ({_describe(error)})") from None
        loaded.append(name)
    return loaded

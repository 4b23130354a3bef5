"""Pluggable multi-task loss weighting: one interface (`Weighting`), one registry (`WEIGHTINGS`).

Every module in this package that defines a method registers it when imported; importing the
package imports them all, so adding a method is one new file with `@register_weighting`.
"""

import importlib
import pkgutil

from rlmtl.weighting.base import (
    WEIGHTINGS,
    Requirements,
    StepContext,
    Weighting,
    WeightingResult,
    make_weighting,
    register_weighting,
)
from rlmtl.weighting.engine import MultiTaskBackward

_INFRASTRUCTURE = {"base", "engine", "adam", "lookahead", "compose", "solvers"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "WEIGHTINGS",
    "MultiTaskBackward",
    "Requirements",
    "StepContext",
    "Weighting",
    "WeightingResult",
    "make_weighting",
    "register_weighting",
]

"""Pluggable multi-task loss weighting: one interface (`Weighting`), one registry (`WEIGHTINGS`).

Importing this package registers the built-in methods.
"""

from rlmtl.weighting import uniform as _uniform  # noqa: F401  (registers "uniform")
from rlmtl.weighting.base import (
    WEIGHTINGS,
    Requirements,
    StepContext,
    Weighting,
    WeightingResult,
    make_weighting,
    register_weighting,
)

__all__ = [
    "WEIGHTINGS",
    "Requirements",
    "StepContext",
    "Weighting",
    "WeightingResult",
    "make_weighting",
    "register_weighting",
]

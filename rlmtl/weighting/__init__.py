"""Pluggable multi-task loss weighting: one interface (`Weighting`), one registry (`WEIGHTINGS`).

Each method is one file in `methods/` that registers itself with `@register_weighting`; importing
this package imports them all, so adding a method is one new file there. The support code the
methods share (the engine, lookahead steps, solvers, compositions, a buffer Adam) sits beside them.
"""

from rlmtl.weighting import methods as _methods  # noqa: F401  (registers every method)
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

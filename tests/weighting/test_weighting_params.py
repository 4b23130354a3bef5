"""Each method's typed parameter class, generated from its constructor (`Weighting.params_class`)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Sequence

import pytest

from rlmtl.weighting import WEIGHTINGS, Weighting, make_weighting
from rlmtl.weighting.base import params_class_of
from rlmtl.weighting.methods.famo import FAMO
from rlmtl.weighting.methods.hydalearn import HydaLearn


def test_famo_params_class_from_its_constructor():
    params = FAMO.params_class()
    assert dataclasses.is_dataclass(params) and params.__dataclass_params__.frozen
    fields = {f.name: f for f in dataclasses.fields(params)}
    assert list(fields) == ["w_lr", "gamma", "min_losses"]
    hints = typing.get_type_hints(params)
    assert hints["w_lr"] is float and hints["min_losses"] == float | Sequence[float]
    assert (fields["w_lr"].default, fields["gamma"].default, fields["min_losses"].default) == (0.025, 0.01, 0.0)
    assert fields["w_lr"].metadata["help"].startswith("learning rate of the task logits' Adam")
    assert "a list of K floats or one float" in fields["min_losses"].metadata["help"]
    assert FAMO.params_class() is params  # generated once per class
    with pytest.raises(dataclasses.FrozenInstanceError):
        params().w_lr = 1.0  # type: ignore[misc]
    assert typing.get_type_hints(HydaLearn.params_class())["lr"] == float | None


def test_every_registered_method_declares_its_parameters_once():
    import inspect

    for name in WEIGHTINGS.names():
        entry = WEIGHTINGS.get(name)
        params = params_class_of(entry)
        signature = [p for p in inspect.signature(entry.__init__).parameters if p not in ("self", "num_tasks")]
        assert [f.name for f in dataclasses.fields(params)] == signature, name
        defaults = dataclasses.asdict(params())
        assert isinstance(make_weighting(name, 3, defaults), entry), name


def test_standalone_use_is_unchanged():
    assert FAMO(3, w_lr=0.1).logits_optimizer is not None
    assert isinstance(make_weighting("famo", 3, {"w_lr": 0.1, "min_losses": [0.0, 0.1, 0.2]}), FAMO)
    with pytest.raises(TypeError, match="bogus"):
        make_weighting("famo", 3, {"bogus": 1})


def test_a_plugin_method_gets_its_own_class():
    class Scaled(Weighting):
        """Test-only method.

        Args:
            num_tasks: K.
            factor: what every weight is
                multiplied by.
            mode: unused (no default).
        """

        def __init__(self, num_tasks: int, mode: str, factor: float = 2.0) -> None:
            super().__init__(num_tasks)
            self.factor, self.mode = factor, mode

    class Inherits(Scaled):
        """No Args section of its own, same constructor."""

    params = Scaled.params_class()
    fields = {f.name: f for f in dataclasses.fields(params)}
    assert fields["factor"].metadata["help"] == "what every weight is multiplied by."
    assert fields["mode"].default is dataclasses.MISSING and fields["mode"].metadata["help"] == "unused (no default)."
    assert params(mode="x").factor == 2.0
    inherited = {f.name: f for f in dataclasses.fields(Inherits.params_class())}
    assert Inherits.params_class() is not params and list(inherited) == ["mode", "factor"]
    assert inherited["factor"].metadata["help"] == "what every weight is multiplied by."  # from the class that defines __init__
    assert dataclasses.fields(Weighting.params_class()) == ()

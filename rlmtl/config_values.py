"""Typed values in configs: a YAML value checked against a type hint and converted to it, and
the rows `rlmtl list` / `rlmtl config` print for a plug-in's typed options."""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import types
import typing
from typing import Any, Union

from rlmtl.errors import ConfigError


def describe(tp: Any) -> str:
    """What a value of type `tp` is, for error messages: "a number", "a list or null", ..."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return " or ".join(repr(arg) for arg in typing.get_args(tp))
    if origin in (list, collections.abc.Sequence):
        return "a list"
    if origin is dict:
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return names.get(tp, str(tp))


def check_value(value: Any, tp: Any, where: str) -> Any:
    """Return `value` converted to type `tp`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_value(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {describe(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: expected {describe(tp)}, got {value!r}")
        return value
    if origin in (list, collections.abc.Sequence):
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)) or (origin is list and not isinstance(value, list)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp in (bool, int):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):  # True is an int to Python, not to a config
            raise ConfigError(f"{where}: expected {describe(tp)}, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads "2e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # NaN walks through every `x <= 0` check after this
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected {describe(tp)}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {tp}")


def type_name(tp: Any) -> str:
    """A short readable name of a type hint: float, float | Sequence[float], str | None, ..."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return "None" if tp is type(None) else tp.__name__
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(tp))
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


def option_rows(cls: type) -> list[dict[str, Any]]:
    """{name, type, default, help} of each field of a plug-in's options or parameter dataclass
    (a field without a default has default "required")."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "required"
        rows.append({"name": f.name, "type": type_name(hints.get(f.name, f.type)), "default": default, "help": f.metadata.get("help", "")})
    return rows

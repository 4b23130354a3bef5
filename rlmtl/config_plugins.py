"""The two config sections typed by plug-ins: `env.options`, built into the options class of
`env.backend` (`Backend.options_class`, from the backend registry), and `weighting.params`, checked
against the parameter class of `weighting.name` (`Weighting.params_class()`). Both registries are
read at load time, after the CLI has loaded the plugins (`rlmtl.plugins` entry points and `RLMTL_PLUGINS`
modules); no backend or method is named here."""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from rlmtl.config_values import check_value
from rlmtl.errors import ConfigError


def options_class_of(backend: str) -> type | None:
    """The options class of a registered backend, or None when `backend` is not registered."""
    from rlmtl.envs import BACKENDS  # registers the built-in backends

    return BACKENDS.get(backend).options_class if backend in BACKENDS else None


def _option_defaults(key: str) -> list[Any]:
    """The defaults of option `key` in every registered backend that has it."""
    from rlmtl.envs import BACKENDS

    defaults = []
    for name in BACKENDS.names():
        for f in dataclasses.fields(BACKENDS.get(name).options_class):
            if f.name == key and f.default is not dataclasses.MISSING:
                defaults.append(f.default)
    return defaults


def env_options(backend: str, given: Any, flat: dict[str, Any], source: str, prefix: str, env_keys: list[str]) -> Any:
    """`env.options` as an instance of the options class of `backend`: every key must be one of
    its fields with a value of the field's type, and the class's own checks must pass.

    Configs written before `env.options` existed (checkpoints, a run folder's config.yaml) hold
    a backend's options flat in `env` (`flat`, the keys that are no EnvConfig field), and the
    options of one backend there for every backend: such a key moves into the options when the
    backend has that option, and is dropped when it holds another backend's default."""
    from rlmtl.envs import BACKENDS

    dotted = f"{prefix}options"
    if backend not in BACKENDS:
        raise ConfigError(f"{source}: '{prefix}backend': unknown backend {backend!r} (registered: {', '.join(BACKENDS.names())})")
    options_class = BACKENDS.get(backend).options_class
    names = [f.name for f in dataclasses.fields(options_class)]
    listed = ", ".join(names) or "none"
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ConfigError(f"{source}: {dotted!r} must be a mapping, got {given!r}")
    given = dict(given)
    for key, value in flat.items():
        if key in names:
            if key in given:
                raise ConfigError(f"{source}: '{prefix}{key}' and '{dotted}.{key}' are both given; keep '{dotted}.{key}'")
            given[key] = value
            continue
        defaults = _option_defaults(key)
        if value not in defaults:
            known = ", ".join(sorted(f"{prefix}{name}" for name in env_keys))
            hint = f"; backend options go in {dotted!r} (options of backend {backend!r}: {listed})" if defaults else ""
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' (known: {known}){hint}")
    hints = typing.get_type_hints(options_class)
    kwargs: dict[str, Any] = {}
    for key, value in given.items():
        if key not in names:
            raise ConfigError(f"{source}: '{dotted}.{key}' is not an option of backend {backend!r} (its options: {listed})")
        kwargs[key] = check_value(value, hints[key], f"{source}: '{dotted}.{key}'")
    try:
        return options_class(**kwargs)
    except (TypeError, ValueError) as error:
        match = re.match(r"(\w+): (.*)", str(error), re.S)
        if match and match.group(1) in names:
            raise ConfigError(f"{source}: '{dotted}.{match.group(1)}': {match.group(2)}") from None
        raise ConfigError(f"{source}: {dotted!r} of backend {backend!r}: {error}") from None


def check_weighting_name(name: str, source: str) -> None:
    """Every part of `weighting.name` (a method or a composition a+b) must be registered."""
    from rlmtl.weighting import WEIGHTINGS  # registers the built-in methods

    for part in name.split("+"):
        if part not in WEIGHTINGS:
            within = f" in {name!r}" if part != name else ""
            registered = ", ".join(WEIGHTINGS.names())
            raise ConfigError(f"{source}: 'weighting.name': unknown weighting {part!r}{within} (registered: {registered})")


def check_agent_name(name: str, source: str) -> None:
    """`agent.name` must be a registered agent."""
    from rlmtl.agents import AGENTS  # registers rlmtl's own agents

    if name not in AGENTS:
        raise ConfigError(f"{source}: 'agent.name': unknown agent {name!r} (registered: {', '.join(AGENTS.names())})")


def check_agent_parts(agent: Any, source: str) -> None:
    """The agent's encoders and augmentations must be registered ones."""
    from rlmtl.agents import AUGMENTATIONS, ENCODERS

    for key in ("lowdim_encoder", "image_encoder"):
        name = getattr(agent, key)
        if name not in ENCODERS:
            raise ConfigError(f"{source}: 'agent.{key}': unknown encoder {name!r} (registered: {', '.join(ENCODERS.names())})")
    for name in agent.augmentations:
        if name not in AUGMENTATIONS:
            raise ConfigError(f"{source}: 'agent.augmentations': unknown augmentation {name!r} (registered: {', '.join(AUGMENTATIONS.names())})")


def action_head_params(name: str, params: Any, source: str, head_hidden_dim: int) -> dict[str, Any]:
    """`agent.head` must be a registered action head, `agent.head_params` fit its parameter class
    (agents/action_heads.py) and `agent.head_hidden_dim` be > 0 for a head that needs a hidden layer
    (the diffusion head's denoiser); returns the params with every default filled in."""
    import dataclasses

    from rlmtl.agents.action_heads import ACTION_HEADS, HeadParamError, head_params_class

    if name not in ACTION_HEADS:
        raise ConfigError(f"{source}: 'agent.head': unknown action head {name!r} (registered: {', '.join(ACTION_HEADS.names())})")
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: 'agent.head_params' must be a mapping, got {params!r}")
    cls = head_params_class(name)
    if getattr(ACTION_HEADS.get(name), "requires_hidden_layer", False) and not head_hidden_dim:
        raise ConfigError(f"{source}: 'agent.head_hidden_dim': the {name} head needs task heads with a hidden layer (> 0, e.g. 256), got {head_hidden_dim!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in params.items():
        if key not in known:
            raise ConfigError(f"{source}: 'agent.head_params.{key}': head {name!r} has no parameter {key!r} (parameters: {', '.join(known) or 'none'})")
        expected = type(known[key].default)
        if isinstance(value, bool) or not isinstance(value, (int, float) if expected is float else expected):
            kind = "a whole number" if expected is int else "a number"
            raise ConfigError(f"{source}: 'agent.head_params.{key}' must be {kind}, got {value!r}")
    fields = cls(**{key: float(v) if type(known[key].default) is float else v for key, v in params.items()})
    try:
        if hasattr(fields, "check"):
            fields.check()
    except HeadParamError as error:
        raise ConfigError(f"{source}: 'agent.head_params.{error.key}' {error.text}") from None
    return dataclasses.asdict(fields)


def weighting_params(name: str, params: Any, source: str, where: str) -> dict[str, Any]:
    """`params` checked against the parameter class of weighting `name` and converted to its
    types. A composition `a+b` takes `{a: {...}, b: {...}}`, or flat keys meaning a's (as
    `make_weighting` splits them)."""
    from rlmtl.weighting import WEIGHTINGS
    from rlmtl.weighting.base import params_class_of

    if not isinstance(params, dict):
        raise ConfigError(f"{source}: {where!r} must be a mapping, got {params!r}")
    if "+" in name:
        first, second = name.split("+", 1)
        nested = [part for part in (first, second) if isinstance(params.get(part), dict)]
        flat = {key: value for key, value in params.items() if key not in nested}
        if first in nested and flat:
            key = next(iter(flat))
            raise ConfigError(f"{source}: '{where}.{key}': with '{where}.{first}' given, {first}'s parameters go there")
        checked: dict[str, Any] = {}
        if first in nested:
            checked[first] = weighting_params(first, params[first], source, f"{where}.{first}")
        else:
            checked.update(weighting_params(first, flat, source, where))
        if second in nested:
            checked[second] = weighting_params(second, params[second], source, f"{where}.{second}")
        return checked
    params_class = params_class_of(WEIGHTINGS.get(name))
    fields = {f.name: f for f in dataclasses.fields(params_class)}
    listed = ", ".join(fields) or "none"
    checked = {}
    for key, value in params.items():
        if key not in fields:
            raise ConfigError(f"{source}: '{where}.{key}' is not a parameter of weighting {name!r} (its parameters: {listed})")
        checked[key] = check_value(value, fields[key].type, f"{source}: '{where}.{key}'")
    try:
        params_class(**checked)
    except TypeError as error:  # a parameter without a default that the config does not give
        raise ConfigError(f"{source}: {where!r} of weighting {name!r}: {error}") from None
    return checked

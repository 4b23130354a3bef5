"""Config files: YAML read without aliases, and composed through a top-level `base:` key.

`base: rlbench10.yaml` names another config file, relative to the folder of the file that names it.
The file's own values override the base's key by key: mappings merge recursively (`train: {steps: 10}`
changes `train.steps` only), lists and scalars replace. A base may have a base of its own. What a run
records (config.yaml, checkpoints, the dataset fingerprint) is the composed config: `base` leaves no
trace in it. A cycle, a missing base, a base that is not a YAML mapping or a chain deeper than
`MAX_BASE_DEPTH` files is a `ConfigError` naming the file and its `base`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rlmtl.errors import ConfigError

BASE_KEY = "base"
MAX_CONFIG_BYTES = 1 << 20
MAX_BASE_DEPTH = 16  # files in one chain: far more than composition needs, few enough to read in an error


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: a few hundred bytes of nested aliases (a "billion laughs" file) expand
    to gigabytes once the config is copied or checked; configs never need them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, f"alias *{event.anchor} (aliases are not accepted in configs)", event.start_mark
            )
        return super().compose_node(parent, index)


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (line, column)."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(problem)


def safe_load_without_aliases(text: str) -> Any:
    """`yaml.safe_load` that refuses aliases (see `_NoAliasLoader`)."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)


def _read_mapping(path: Path, where: str) -> dict[str, Any]:
    """The top-level mapping of one YAML file (an empty file is an empty mapping); errors start with
    `where`, which names the file (and, for a base, the file naming it)."""
    if not path.is_file():
        raise ConfigError(f"{where}: config file not found")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: {size} bytes is not a config (at most {MAX_CONFIG_BYTES})")
    try:
        loaded = safe_load_without_aliases(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML ({yaml_problem(error)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not a text file") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    return loaded


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s values: mappings merged key by key, anything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: str | Path) -> tuple[dict[str, Any], list[Path]]:
    """The composed mapping of a config file and the chain of files it came from, `path` first."""
    path = Path(path)
    chain = [path]
    layers = [_read_mapping(path, str(path))]
    while BASE_KEY in layers[-1]:
        naming, target = chain[-1], layers[-1].pop(BASE_KEY)
        if not isinstance(target, str) or not target.strip():
            raise ConfigError(f"{naming}: {BASE_KEY!r} must name a config file (a path relative to this file), got {target!r}")
        base = naming.parent / target
        where = f"{naming}: {BASE_KEY!r} names {base}"
        seen = [p.resolve() for p in chain]
        if base.resolve() in seen:
            cycle = " -> ".join(str(p) for p in chain[seen.index(base.resolve()) :] + [base])
            raise ConfigError(f"{where}, which is already in the chain (a cycle: {cycle})")
        if len(chain) >= MAX_BASE_DEPTH:
            raise ConfigError(f"{where}: more than {MAX_BASE_DEPTH} files deep (each file's base counts)")
        if not base.is_file():
            raise ConfigError(f"{where}, which {'is not a file' if base.exists() else 'does not exist'}")
        chain.append(base)
        layers.append(_read_mapping(base, where))
    composed: dict[str, Any] = {}
    for layer in reversed(layers):
        composed = merge(composed, layer)
    return composed, chain

"""The comparison spec: a YAML file naming settings, methods, seeds and where the runs go.

    out: results/compare-mt10            # the comparison's folder (runs/, results.json, results.md, figures)
    settings:                            # name -> a config file and dotted overrides
      default: {config: configs/compare_default.yaml}
      hard: {config: configs/compare_hard.yaml, overrides: [train.steps=5000]}
      slow: {config: configs/mt10_rgb.yaml, seeds: [0]}   # optional: this setting's own seeds (a subset of `seeds`)
    methods: [uniform, famo, auto_lambda+cagrad]   # weighting names (compositions too), checked against the registry
    method_overrides:                    # optional: overrides for one method in every setting
      hydalearn: ["weighting.primary_tasks=[peg-insert-side-v3]"]
    seeds: [0, 1, 2]                     # train.seed of each run: distinct integers >= 0
    baseline: uniform                    # the method others are compared with (P(improvement)); default uniform
    parallel: 1                          # runs at once on this machine (launcher local)
    launcher: local                      # local | slurm
    slurm: {partition: gpu, timeout_min: 240, gpus_per_node: 1, cpus_per_task: 8}
    bootstrap: {reps: 2000, seed: 0, confidence: 0.95}

Keys are locked like a config's: an unknown key, a bad value, an unknown method or a setting whose
config does not load (with its overrides, for every method) is a `SpecError` (exit 2): one line that
names the spec file and the key, raised before anything is written. Paths (`out`, `config`) are
relative to the current folder, as every path in a config is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlmtl.config_files import read_config_file
from rlmtl.errors import ConfigError

SETTING_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# keys the comparison sets itself for every run (rlmtl/compare/runs.py): an override may not set them
RESERVED_KEYS = ("name", "out_dir", "weighting.name", "train.seed", "train.num_threads", "eval.workers")
LAUNCHERS = ("local", "slurm")


class SpecError(ConfigError):
    """A comparison spec names an unknown key, method or setting, or holds a bad value (exit 2)."""


@dataclass(frozen=True)
class Setting:
    """One setting: a config file, the dotted overrides applied to it for every run, and its seeds
    (None: the spec's `seeds`; else a subset of them, e.g. more seeds for the rows that decide a default)."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SlurmOptions:
    """The resources of each run's SLURM job, handed to submitit's AutoExecutor (rlmtl/compare/slurm.py)."""

    partition: str | None = None
    timeout_min: int = 240
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()  # shell lines run before the job (module load ..., source venv/bin/activate)
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, e.g. {"mail-type": "END"}
    poll_s: float = 60.0  # seconds between job-state checks while waiting


@dataclass(frozen=True)
class Bootstrap:
    """The stratified bootstrap of the intervals (rlmtl/compare/statistics.py)."""

    reps: int = 2000
    seed: int = 0
    confidence: float = 0.95


@dataclass(frozen=True)
class CompareSpec:
    """A whole comparison: every (setting, method, seed) is one run."""

    path: Path
    out: Path
    settings: tuple[Setting, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    method_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    baseline: str = "uniform"
    parallel: int = 1
    launcher: str = "local"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    bootstrap: Bootstrap = field(default_factory=Bootstrap)


TOP_KEYS = ("out", "settings", "methods", "method_overrides", "seeds", "baseline", "parallel", "launcher", "slurm", "bootstrap")
SLURM_TYPES: dict[str, tuple[type, ...]] = {
    "partition": (str,),
    "timeout_min": (int,),
    "gpus_per_node": (int,),
    "cpus_per_task": (int,),
    "mem_gb": (int, float),
    "account": (str,),
    "qos": (str,),
    "constraint": (str,),
    "setup": (list,),
    "additional_parameters": (dict,),
    "poll_s": (int, float),
}


def load_spec(path: str | Path) -> CompareSpec:
    """Read and check the spec at `path` (see the module docstring); SpecError naming the key otherwise.
    Every setting's config is loaded with each method, so a bad override or method parameter fails here."""
    path = Path(path)
    try:
        data, _ = read_config_file(path)  # the same YAML reading as configs (no aliases, size limit)
    except ConfigError as error:
        raise SpecError(str(error)) from None
    where = str(path)
    _check_keys(data, TOP_KEYS, where, "")
    for required in ("out", "settings", "methods", "seeds"):
        if required not in data:
            raise SpecError(f"{where}: missing key {required!r} (a spec needs out, settings, methods and seeds)")
    out = _string(data["out"], where, "out")
    methods = _methods(data["methods"], where)
    seeds = _seeds(data["seeds"], where)
    settings = _settings(data["settings"], seeds, where)
    method_overrides = _method_overrides(data.get("method_overrides", {}), methods, where)
    baseline = _string(data.get("baseline", "uniform"), where, "baseline")
    if baseline not in methods:
        raise SpecError(f"{where}: 'baseline': {baseline!r} is not one of the methods {list(methods)} (add it, or name another baseline)")
    parallel = data.get("parallel", 1)
    if not _is_int(parallel) or parallel < 1:
        raise SpecError(f"{where}: 'parallel' must be an integer >= 1 (runs at once), got {parallel!r}")
    launcher = data.get("launcher", "local")
    if launcher not in LAUNCHERS:
        raise SpecError(f"{where}: 'launcher' must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    spec = CompareSpec(
        path=path,
        out=Path(out),
        settings=settings,
        methods=methods,
        seeds=seeds,
        method_overrides=method_overrides,
        baseline=baseline,
        parallel=parallel,
        launcher=launcher,
        slurm=_slurm(data.get("slurm", {}), where),
        bootstrap=_bootstrap(data.get("bootstrap", {}), where),
    )
    _check_configs_load(spec)
    return spec


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_keys(data: Any, known: tuple[str, ...], where: str, prefix: str) -> None:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: {prefix.rstrip('.') or 'the top level'!r} must be a mapping, got {data!r}")
    for key in data:
        if key not in known:
            raise SpecError(f"{where}: unknown key {prefix + str(key)!r} (known: {', '.join(prefix + k for k in known)})")


def _string(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _string_list(value: Any, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SpecError(f"{where}: {key!r} must be a list of strings, got {value!r}")
    return tuple(value)


def _methods(value: Any, where: str) -> tuple[str, ...]:
    from rlmtl.config_plugins import check_weighting_name

    if not isinstance(value, list) or not value:
        raise SpecError(f"{where}: 'methods' must be a non-empty list of weighting names, got {value!r}")
    for method in value:
        if not isinstance(method, str) or not method:
            raise SpecError(f"{where}: 'methods': {method!r} is not a weighting name")
        try:
            check_weighting_name(method, where)
        except ConfigError as error:  # "unknown weighting 'x' (registered: ...)", said of this key
            raise SpecError(str(error).replace("'weighting.name'", "'methods'", 1)) from None
    duplicates = sorted({m for m in value if value.count(m) > 1})
    if duplicates:
        raise SpecError(f"{where}: 'methods' lists {', '.join(duplicates)} more than once")
    return tuple(value)


def _seeds(value: Any, where: str, key: str = "seeds") -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where}: {key!r} must be a non-empty list of integers >= 0, got {value!r}")
    for seed in value:
        if not _is_int(seed) or seed < 0:  # a bool is no seed (YAML's yes/no)
            raise SpecError(f"{where}: {key!r}: {seed!r} is not an integer >= 0")
    duplicates = sorted({s for s in value if value.count(s) > 1})
    if duplicates:
        raise SpecError(f"{where}: {key!r} lists {', '.join(map(str, duplicates))} more than once (a run per seed)")
    return tuple(value)


def _check_overrides(overrides: tuple[str, ...], where: str, key: str) -> None:
    from rlmtl.config import parse_override

    for text in overrides:
        try:
            dotted = ".".join(parse_override(text)[0])
        except ConfigError as error:
            raise SpecError(f"{where}: {key!r}: {error}") from None
        if dotted in RESERVED_KEYS:
            raise SpecError(f"{where}: {key!r}: {text!r} sets {dotted!r}, which the comparison sets for each run")


def _settings(value: Any, spec_seeds: tuple[int, ...], where: str) -> tuple[Setting, ...]:
    if not isinstance(value, dict) or not value:
        raise SpecError(f"{where}: 'settings' must be a non-empty mapping of name -> {{config, overrides}}, got {value!r}")
    settings = []
    for name, entry in value.items():
        key = f"settings.{name}"
        if not isinstance(name, str) or not SETTING_NAME.match(name):
            raise SpecError(f"{where}: {key!r}: a setting name is letters, digits, '_', '.' and '-' (it names run folders)")
        _check_keys(entry, ("config", "overrides", "seeds"), where, f"{key}.")
        if "config" not in entry:
            raise SpecError(f"{where}: {key!r} needs a 'config' (a config file)")
        config = _string(entry["config"], where, f"{key}.config")
        if not Path(config).is_file():
            raise SpecError(f"{where}: '{key}.config': {config} is not a file")
        overrides = _string_list(entry.get("overrides", []), where, f"{key}.overrides")
        _check_overrides(overrides, where, f"{key}.overrides")
        seeds = None
        if "seeds" in entry:
            seeds = _seeds(entry["seeds"], where, f"{key}.seeds")
            outside = [seed for seed in seeds if seed not in spec_seeds]
            if outside:
                raise SpecError(f"{where}: '{key}.seeds': {', '.join(map(str, outside))} not in the spec's 'seeds' {list(spec_seeds)}")
        settings.append(Setting(name, config, overrides, seeds))
    return tuple(settings)


def _method_overrides(value: Any, methods: tuple[str, ...], where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: 'method_overrides' must be a mapping of method -> overrides, got {value!r}")
    result = {}
    for method, overrides in value.items():
        if method not in methods:
            raise SpecError(f"{where}: 'method_overrides.{method}': {method!r} is not one of the methods {list(methods)}")
        result[method] = _string_list(overrides, where, f"method_overrides.{method}")
        _check_overrides(result[method], where, f"method_overrides.{method}")
    return result


def _slurm(value: Any, where: str) -> SlurmOptions:
    _check_keys(value, tuple(SLURM_TYPES), where, "slurm.")
    for key, item in value.items():
        types = SLURM_TYPES[key]
        if isinstance(item, bool) or not isinstance(item, types):
            raise SpecError(f"{where}: 'slurm.{key}' must be {' or '.join(t.__name__ for t in types)}, got {item!r}")
    if "setup" in value:
        value = {**value, "setup": _string_list(value["setup"], where, "slurm.setup")}
    for key in ("timeout_min", "cpus_per_task", "poll_s"):
        if key in value and not value[key] > 0:
            raise SpecError(f"{where}: 'slurm.{key}' must be positive, got {value[key]!r}")
    if value.get("gpus_per_node", 0) < 0:
        raise SpecError(f"{where}: 'slurm.gpus_per_node' must be >= 0, got {value['gpus_per_node']!r}")
    return SlurmOptions(**value)


def _bootstrap(value: Any, where: str) -> Bootstrap:
    _check_keys(value, ("reps", "seed", "confidence"), where, "bootstrap.")
    reps, seed, confidence = value.get("reps", 2000), value.get("seed", 0), value.get("confidence", 0.95)
    if not _is_int(reps) or reps < 100:
        raise SpecError(f"{where}: 'bootstrap.reps' must be an integer >= 100, got {reps!r}")
    if not _is_int(seed) or seed < 0:
        raise SpecError(f"{where}: 'bootstrap.seed' must be an integer >= 0, got {seed!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise SpecError(f"{where}: 'bootstrap.confidence' must be in (0, 1), got {confidence!r}")
    return Bootstrap(reps, seed, float(confidence))


def _check_configs_load(spec: CompareSpec) -> None:
    """Every (setting, method) config loads: one line naming the setting, the method and the problem."""
    from rlmtl.compare.runs import run_overrides
    from rlmtl.config import load_config

    for setting in spec.settings:
        for method in spec.methods:
            try:
                load_config(setting.config, run_overrides(spec, setting, method, spec.seeds[0], threads=0))
            except ConfigError as error:
                raise SpecError(f"{spec.path}: 'settings.{setting.name}' with method {method!r}: {error}") from None

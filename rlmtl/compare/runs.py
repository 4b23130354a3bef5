"""The runs of a comparison: their names, configs, folders, states and locks.

Run (setting, method, seed) is `rlmtl run <setting config> <setting overrides> <method overrides>
weighting.name=<method> train.seed=<seed> name=<setting>-<method>-seed<seed> out_dir=<out>/runs`, so
its folder is `<out>/runs/<setting>-<method>-seed<seed>`. Its state, read from that folder:

- `done`: eval.json is there and the folder's config.yaml is this run's config (same digest);
- `resume`: checkpoints/last is there (and the config matches): `rlmtl run --resume`;
- `partial`: only what training writes before its first checkpoint (same config): it is moved to
  `<out>/abandoned/` and the run starts again (rlmtl refuses to train into such a folder);
- `new`: no folder, or an empty one;
- `foreign`: anything else (another config, files rlmtl did not write): never touched, the
  comparison stops naming it.

The config digest leaves out the keys a launcher sets to fit the machine and that do not change
results (`train.num_threads`, `eval.workers`, `eval.envs_per_worker`, `data.workers`), so a run
started with `parallel: 2` continues under `parallel: 1`, and a run recorded under another default
of `eval.envs_per_worker` (8 before session 12) stays this spec's run.

A run is executed under its lock, `<out>/state/<name>.lock` (rlmtl/folder_lock.py), by one process
at a time, whichever launcher started it; each attempt appends a line to `<out>/state/<name>.jsonl`
(start, end, exit code, wall seconds, host, SLURM job id).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlmtl.errors import RlmtlError

if TYPE_CHECKING:
    from rlmtl.compare.spec import CompareSpec, Setting
    from rlmtl.config import RunConfig

# what training writes into a run folder before its first checkpoint (rlmtl/training/trainer.py, run_log.py)
BEFORE_FIRST_CHECKPOINT = {"config.yaml", "tb", "metrics.jsonl", "checkpoints", ".rlmtl.lock"}
LAUNCH_KEYS = (("train", "num_threads"), ("eval", "workers"), ("eval", "envs_per_worker"), ("data", "workers"))
STATES = ("done", "resume", "partial", "new", "foreign")


@dataclass(frozen=True)
class PlannedRun:
    """One (setting, method, seed) of a comparison."""

    setting: str
    method: str
    seed: int
    name: str  # <setting>-<method>-seed<seed>
    folder: Path  # <out>/runs/<name>
    config: str  # the setting's config file
    overrides: tuple[str, ...]  # everything after the config on the `rlmtl run` line, thread settings excluded
    digest: str  # config_digest of the resolved config

    def command(self, threads: int, resume: bool) -> list[str]:
        """The `rlmtl` arguments of this run (without the program): `run CONFIG --no-progress ...`."""
        return ["run", self.config, "--no-progress", *self.overrides, *thread_overrides(threads), *(["--resume"] if resume else [])]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "folder": str(self.folder), "overrides": list(self.overrides)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PlannedRun":
        return cls(**{**data, "folder": Path(data["folder"]), "overrides": tuple(data["overrides"])})


def run_name(setting: str, method: str, seed: int) -> str:
    return f"{setting}-{method}-seed{seed}"


def thread_overrides(threads: int) -> list[str]:
    """train.num_threads and eval.workers for a run given `threads` cores (none when 0: the config's own)."""
    return [f"train.num_threads={threads}", f"eval.workers={threads}"] if threads > 0 else []


def run_overrides(spec: "CompareSpec", setting: "Setting", method: str, seed: int, threads: int) -> list[str]:
    """The dotted overrides of run (setting, method, seed); later ones win, and the last are the comparison's own."""
    own = [
        f"weighting.name={_yaml_string(method)}",
        f"train.seed={seed}",
        f"name={_yaml_string(run_name(setting.name, method, seed))}",
        f"out_dir={_yaml_string(str(spec.out / 'runs'))}",
    ]
    return [*setting.overrides, *spec.method_overrides.get(method, ()), *own, *thread_overrides(threads)]


def _yaml_string(text: str) -> str:
    """`text` as an override value that parses back to the string: plain when it does, else JSON-quoted
    (a JSON string is a YAML string, so any path parses)."""
    from rlmtl.config_files import safe_load_without_aliases

    try:
        if safe_load_without_aliases(text) == text:
            return text
    except Exception:  # not valid YAML as it is (a ': ' or a leading '*')
        pass
    return json.dumps(text)


def config_digest(config: "RunConfig") -> str:
    """sha256 (16 hex digits) of the resolved config without the launch keys (see the module docstring)."""
    from rlmtl.config import config_to_dict

    data = config_to_dict(config)
    for section, key in LAUNCH_KEYS:
        data[section][key] = None
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_runs(spec: "CompareSpec") -> list[PlannedRun]:
    """Every run of `spec`, seeds outermost (a comparison stopped half-way covers every method),
    then settings (those whose seeds hold this seed), then methods."""
    from rlmtl.config import load_config

    runs = []
    for seed in spec.seeds:
        for setting in spec.settings:
            if setting.seeds is not None and seed not in setting.seeds:
                continue
            for method in spec.methods:
                overrides = run_overrides(spec, setting, method, seed, threads=0)
                config = load_config(setting.config, overrides)
                runs.append(
                    PlannedRun(
                        setting.name,
                        method,
                        seed,
                        run_name(setting.name, method, seed),
                        config.run_dir,
                        setting.config,
                        tuple(overrides),
                        config_digest(config),
                    )
                )
    return runs


def folder_digest(folder: Path) -> str | None:
    """The config digest of the run in `folder` (its config.yaml), or None when it has none or it does not load."""
    from rlmtl.config import load_config
    from rlmtl.errors import ConfigError

    path = folder / "config.yaml"
    if not path.is_file():
        return None
    try:
        return config_digest(load_config(path))
    except ConfigError:
        return None


def run_state(run: PlannedRun) -> tuple[str, str]:
    """(state, why) of `run`'s folder; state is one of STATES (see the module docstring)."""
    folder = run.folder
    if not folder.exists():
        return "new", "no folder yet"
    if not folder.is_dir():
        return "foreign", f"{folder} is not a folder"
    names = {path.name for path in folder.iterdir()}
    if not names - {".rlmtl.lock"}:
        return "new", "an empty folder"
    digest = folder_digest(folder)
    if digest is None:
        return "foreign", f"{folder} holds {', '.join(sorted(names)[:3])} but no config.yaml of an rlmtl run"
    if digest != run.digest:
        return "foreign", f"{folder} holds a run of another config (its config.yaml differs from this spec's)"
    if (folder / "eval.json").is_file():
        return "done", "eval.json written"
    if (folder / "checkpoints" / "last").is_file():
        return "resume", "checkpoints/last written"
    if names <= BEFORE_FIRST_CHECKPOINT:
        return "partial", "stopped before its first checkpoint"
    return "foreign", f"{folder} holds {', '.join(sorted(names - BEFORE_FIRST_CHECKPOINT)[:3])} beside a run without checkpoints"


def move_aside(run: PlannedRun, out: Path) -> Path:
    """Move a `partial` run folder to `<out>/abandoned/<name>-<time>` (kept, never deleted); returns the new path."""
    target = out / "abandoned" / f"{run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    run.folder.rename(target)
    return target


def state_folder(out: Path) -> Path:
    return out / "state"


def lock_name(run: PlannedRun) -> str:
    return f"{run.name}.lock"


def attempts_path(out: Path, run: PlannedRun) -> Path:
    return state_folder(out) / f"{run.name}.jsonl"


def read_attempts(out: Path, run: PlannedRun) -> list[dict[str, Any]]:
    """The attempt records of `run` (a torn last line, from a process killed while writing it, is skipped)."""
    path = attempts_path(out, run)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def append_attempt(out: Path, run: PlannedRun, record: dict[str, Any]) -> None:
    """Append one attempt record (written only by the holder of the run's lock, so one writer at a time)."""
    import os

    path = attempts_path(out, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def run_lock_holder(out: Path, run: PlannedRun) -> str | None:
    """Who holds `run`'s lock ('pid N on host (...)'), or None when it is free."""
    from rlmtl.folder_lock import lock_holder

    return lock_holder(state_folder(out), lock_name(run))


def check_runs(runs: list[PlannedRun]) -> dict[str, tuple[str, str]]:
    """The state of every run; RlmtlError naming the first `foreign` folder (nothing is started then)."""
    states = {run.name: run_state(run) for run in runs}
    for run in runs:
        state, why = states[run.name]
        if state == "foreign":
            raise RlmtlError(f"run {run.name}: {why}; rlmtl compare does not write over it (move it away, or set another 'out')")
    return states

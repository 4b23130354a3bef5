"""The episodes log: one JSON line per finished evaluation episode, so an evaluation can resume.

`rlmtl eval` appends a line to `<out>/eval_episodes.jsonl` (`eval_episodes.rank<R>.jsonl` per
rank of a sharded evaluation) as each episode finishes, flushed and fsynced before the next
result is taken. A line is keyed by the checkpoint's content hash, the environment settings'
digest, the rlmtl version, the task, the episode index and its scene seed, so `rlmtl eval
--resume` skips the episodes already in any log of the folder, and a different checkpoint,
setting or rlmtl version never reuses them. Without `--resume` a folder holding a log is refused:
the keys are no defence against a hand-written log (anyone who can write the folder can copy
them), so episodes are taken from a log only when the user asks for it. Episodes that ended in an
error (worker crash or hang after every rerun) are logged with `error` set and are run again on
resume; an outcome beats an error for the same key.

A crash can tear only the last line; readers ignore it and the writer cuts it off before
appending. Delete the `eval_episodes*.jsonl` files to evaluate from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from rlmtl.envs import EnvSettings
from rlmtl.envs.base import identifying_options
from rlmtl.errors import OutputError

LOG_NAME = "eval_episodes.jsonl"


def log_name(rank: int, world_size: int) -> str:
    """File name of a rank's log (the plain name without sharding)."""
    return LOG_NAME if world_size <= 1 else f"eval_episodes.rank{rank}.jsonl"


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (first 16 hex digits): the identity of a checkpoint."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def settings_digest(settings: EnvSettings) -> str:
    """Digest of what changes an episode's outcome (video camera and size do not)."""
    relevant = {k: v for k, v in asdict(settings).items() if k not in ("video_camera", "video_size", "task", "options")}
    relevant["extra"] = sorted(identifying_options(settings.options).items())  # the backend's options as (key, value) pairs
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=repr).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class EpisodeKey:
    """Identity of one evaluation episode."""

    checkpoint: str
    settings: str
    task: str
    episode: int
    scene_seed: int
    rlmtl: str  # the version that ran it


MAX_LINE_BYTES = 1 << 16
"""Longest line a reader accepts (rlmtl writes about 300 bytes a record): a log is read a line at a
time, so a huge or sparse file cannot make the reader allocate more than this."""

_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "checkpoint": str,
    "settings": str,
    "task": str,
    "episode": int,
    "scene_seed": int,
    "rlmtl": str,
}
_OUTCOME_TYPES: dict[str, type | tuple[type, ...]] = {"success": bool, "steps": int, "failure": str}


def _checked(record: Any) -> dict[str, Any]:
    """`record` if it has the fields and types rlmtl writes (an error record needs no outcome), else ValueError."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    needed = dict(_FIELD_TYPES)
    if not record.get("error"):
        needed.update(_OUTCOME_TYPES)
    for name, kind in needed.items():
        value = record.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"field {name!r} is missing or not a {getattr(kind, '__name__', kind)}")
    if not record.get("error") and record["steps"] < 0:
        raise ValueError("field 'steps' is negative")
    return record


def _key_of(record: dict[str, Any]) -> EpisodeKey:
    return EpisodeKey(*(record[name] for name in _FIELD_TYPES))  # type: ignore[arg-type]


def existing_logs(folder: Path | None) -> list[Path]:
    """The episode logs already in `folder` (none without a folder)."""
    return sorted(folder.glob("eval_episodes*.jsonl")) if folder is not None and folder.is_dir() else []


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line, whether it is the file's last line) for each line of `path`, read a
    line at a time; OutputError naming the line for one longer than MAX_LINE_BYTES."""
    with open(path, "rb") as handle:
        number = 0
        line = handle.readline(MAX_LINE_BYTES + 1)
        while line:
            number += 1
            if len(line) > MAX_LINE_BYTES:
                raise OutputError(f"{path}:{number}: a line of over {MAX_LINE_BYTES} bytes: not an episode log rlmtl wrote")
            following = handle.readline(MAX_LINE_BYTES + 1)
            yield number, line, not following
            line = following


def read_log(path: Path) -> Iterator[dict[str, Any]]:
    """The well-formed records of one log; a torn (unparseable) last line is skipped, other bad
    lines are warned about and skipped. OutputError for an unreadable file or an over-long line."""
    try:
        for number, line, is_last in _lines(path):
            if not line.strip():
                continue
            try:
                record = _checked(json.loads(line))
            except (ValueError, RecursionError) as error:  # JSON errors are ValueErrors; deep nesting recurses
                if not is_last:  # only the final line can be torn by a crash
                    print(f"rlmtl eval: warning: {path}:{number}: unreadable line skipped ({error})", file=sys.stderr)
                continue
            yield record
    except FileNotFoundError:
        return
    except OSError as error:
        raise OutputError(f"{path}: cannot read the episodes log ({error.strerror or error})") from None


def read_logs(folder: Path) -> dict[EpisodeKey, dict[str, Any]]:
    """Every record in the folder's `eval_episodes*.jsonl`, one per key (an outcome beats an error)."""
    merged: dict[EpisodeKey, dict[str, Any]] = {}
    for path in sorted(folder.glob("eval_episodes*.jsonl")):
        for record in read_log(path):
            key = _key_of(record)
            if key not in merged or merged[key].get("error"):
                merged[key] = record
    return merged


class EpisodeLog:
    """Appends records to one log file, each flushed and fsynced; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._cut_torn_tail()
            self._handle = open(self.path, "ab")
        except OSError as error:
            raise OutputError(f"{self.path}: cannot open the episodes log ({error.strerror or error})") from None

    def _cut_torn_tail(self) -> None:
        """Drop a last line without its newline (a write torn by a crash)."""
        if not self.path.is_file():
            return
        with open(self.path, "rb+") as handle:
            end = handle.seek(0, os.SEEK_END)
            cut = end
            while cut > 0:  # back to just after the last newline, a block at a time
                start = max(0, cut - (1 << 16))
                handle.seek(start)
                block = handle.read(cut - start)
                if cut == end and block.endswith(b"\n"):
                    return
                newline = block.rfind(b"\n")
                if newline >= 0:
                    cut = start + newline + 1
                    break
                cut = start
            handle.truncate(cut)
            os.fsync(handle.fileno())

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as a line and make it durable before returning."""
        try:
            self._handle.write(json.dumps(record, sort_keys=True).encode() + b"\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as error:
            raise OutputError(f"{self.path}: cannot append to the episodes log ({error.strerror or error})") from None

    def close(self) -> None:
        try:
            self._handle.close()
        except OSError:  # the failed write `append` already reported (every record is flushed when appended)
            pass

    def __enter__(self) -> "EpisodeLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def key_record(key: EpisodeKey) -> dict[str, Any]:
    """The key fields of a log record."""
    return asdict(key)

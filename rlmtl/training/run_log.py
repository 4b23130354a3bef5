"""A run's logs: TensorBoard events (`tb/`) and `metrics.jsonl`, written by rank 0 only; a write
that fails (full disk, a `tb/` the user cannot write) is an `OutputError` naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from rlmtl.atomic import write_text_atomic
from rlmtl.errors import OutputError
from rlmtl.training.tb_events import EventFile

METRICS_FILE = "metrics.jsonl"


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric lines written after `step` (the checkpoint a run resumes from)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise OutputError(f"{path}: cannot read the run's metrics ({error.strerror or error})") from None
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # blank, or torn by a crash mid-append
        if isinstance(record, dict) and isinstance(record.get("step", 0), int) and record.get("step", 0) <= step:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))


class RunLog:
    """TensorBoard writer and metrics.jsonl of one run folder, opened at `step` (0 or the resumed one)."""

    def __init__(self, run_dir: Path, step: int, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import text

        self.run_dir = run_dir
        self.events = EventFile(run_dir / "tb", resumed_at=step)
        if step == 0:
            self.events.summary(text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "\n```"), 0)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.events.scalar(tag, value, step)

    def append(self, record: dict[str, Any]) -> None:
        """One JSON line in metrics.jsonl."""
        path = self.run_dir / METRICS_FILE
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:
            raise OutputError(f"{path}: cannot append to the run's metrics ({error.strerror or error})") from None

    def close(self) -> None:
        self.events.close()

"""A run's logs: TensorBoard events (`tb/`) and `metrics.jsonl`, written by rank 0 only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from rlmtl.atomic import write_text_atomic

METRICS_FILE = "metrics.jsonl"


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric lines written after `step` (the checkpoint a run resumes from)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # blank, or torn by a crash mid-append
        if record.get("step", 0) <= step:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))


class RunLog:
    """TensorBoard writer and metrics.jsonl of one run folder, opened at `step` (0 or the resumed one)."""

    def __init__(self, run_dir: Path, step: int, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=step if step else None)
        if step == 0:
            self.writer.add_text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "\n```")

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def append(self, record: dict[str, Any]) -> None:
        """One JSON line in metrics.jsonl."""
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.writer.close()

"""Each run's gradient-conflict summary, so a comparison can say whether a method wins where
tasks' gradients conflict (issue "Which weighting helps, and why").

`run_diagnostics(folder)` reads `diagnostics.json` or, when it is not there yet, summarises the
run's metrics.jsonl (the `conflict` and `grad_norm` entries the gradient-conflict monitor logs,
rlmtl/training/gradient_conflict.py) and writes it: the mean over the run's measurements of the
fraction of task pairs whose shared-parameter gradients point apart (cosine < 0), of the mean
pairwise cosine and of each task's gradient norm, and the same over the last quarter of training.
diagnostics.json is a few hundred bytes, kept in git with the run's eval.json, where metrics.jsonl
(hundreds of kilobytes) is not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rlmtl.atomic import write_text_atomic

DIAGNOSTICS = "diagnostics.json"


def summarise_metrics(path: Path) -> dict[str, Any] | None:
    """The conflict summary of a metrics.jsonl (None when it holds no conflict measurement)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if isinstance(record, dict) and isinstance(record.get("conflict"), dict):
            records.append(record)
    if not records:
        return None
    last_quarter = records[len(records) - max(1, len(records) // 4) :]

    def means(rows: list[dict[str, Any]]) -> dict[str, Any]:
        tasks = list(rows[0].get("grad_norm", {}))
        return {
            "conflict_fraction": float(np.mean([r["conflict"]["fraction"] for r in rows])),
            "mean_cosine": float(np.mean([r["conflict"]["mean_cosine"] for r in rows])),
            "grad_norm": {t: float(np.mean([r["grad_norm"][t] for r in rows if t in r.get("grad_norm", {})])) for t in tasks},
        }

    return {"measurements": len(records), "steps": [records[0]["step"], records[-1]["step"]], "all": means(records), "last_quarter": means(last_quarter)}


def run_diagnostics(folder: Path) -> dict[str, Any] | None:
    """The run's conflict summary: diagnostics.json, written from metrics.jsonl when missing; None
    when the run measured none (diagnostics.every = 0) or neither file is there."""
    path = folder / DIAGNOSTICS
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    metrics = folder / "metrics.jsonl"
    if not metrics.is_file():
        return None
    summary = summarise_metrics(metrics)
    if summary is not None:
        write_text_atomic(path, json.dumps(summary, indent=1) + "\n")
    return summary

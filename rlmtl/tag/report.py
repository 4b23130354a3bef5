"""`rlmtl affinity` artifacts: affinity.json, a heatmap, the strongest pairs over training, and
the ranked task groupings per budget k (TAG, Fifty et al., NeurIPS 2021)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rlmtl.atomic import write_text_atomic
from rlmtl.figures import pyplot, save_figure
from rlmtl.report import read_metrics
from rlmtl.tag.grouping import Grouping, search_groupings, serving_groups

ORIENTATION = "affinity[i][j] = 1 - L_j(after a lookahead step on task i's gradient) / L_j(before): source i (row), recipient j (column)"


def write_affinity(run_dir: Path, tasks: list[str], matrix: np.ndarray, max_groups: int, divide_by_lr: bool) -> dict[str, Any]:
    """Write affinity.json, groupings.md and plots/affinity_*.png (and .pdf) into `run_dir`; returns the JSON."""
    history = [{"step": m["step"], "affinity": m["affinity"]} for m in read_metrics(run_dir) if "affinity" in m]
    groupings = search_groupings(matrix, max_groups=min(max_groups, len(tasks)), top=3)
    content = {
        "tasks": tasks,
        "orientation": ORIENTATION,
        "divided_by_lr": divide_by_lr,
        "affinity": matrix.tolist(),
        "history": history,
        "groupings": {str(k): [_grouping_json(g, tasks, matrix) for g in ranked] for k, ranked in groupings.items()},
    }
    write_text_atomic(run_dir / "affinity.json", json.dumps(content, indent=1) + "\n")
    lines = ["# Task groupings (TAG)", "", f"Affinity orientation: {ORIENTATION}.", ""]
    for k, ranked in groupings.items():
        lines.append(f"## k = {k}")
        for rank, grouping in enumerate(ranked, 1):
            lines.append(f"{rank}. score {grouping.score:.3g}: " + " | ".join(", ".join(group) for group in grouping.named(tasks)))
        lines.append("")
    write_text_atomic(run_dir / "groupings.md", "\n".join(lines))
    plot_heatmap(tasks, matrix, run_dir / "plots" / "affinity_heatmap.png")
    if history:
        plot_strongest_pairs(tasks, history, run_dir / "plots" / "affinity_pairs.png")
    return content


def _grouping_json(grouping: Grouping, tasks: list[str], matrix: np.ndarray) -> dict[str, Any]:
    """One ranked grouping as JSON: its groups, score, and which group serves each task."""
    serve = serving_groups(matrix, grouping.groups)
    return {"groups": grouping.named(tasks), "score": grouping.score, "serve": {task: serve[i] for i, task in enumerate(tasks)}}


def plot_heatmap(tasks: list[str], matrix: np.ndarray, target: Path) -> None:
    """The affinity matrix as a heatmap, diverging around 0; saved as PNG and PDF (rlmtl.figures)."""
    plt = pyplot()
    off_diagonal = matrix[~np.eye(len(tasks), dtype=bool)]
    limit = float(np.abs(off_diagonal).max()) or 1.0
    # 0.6 inch per task up to MT10's size; MT50's 50 tasks share 16 inches, in a smaller font
    side = min(0.6 * len(tasks), 16.0)
    fontsize, rotation, align = (7, 45, "right") if len(tasks) <= 20 else (5, 90, "center")
    figure, axis = plt.subplots(figsize=(1.0 + side, 0.8 + side * 0.55 / 0.6))
    image = axis.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit)
    axis.set_xticks(range(len(tasks)), tasks, rotation=rotation, ha=align, fontsize=fontsize)
    axis.set_yticks(range(len(tasks)), tasks, fontsize=fontsize)
    axis.set_xlabel("recipient task j")
    axis.set_ylabel("source task i (step on its gradient)")
    figure.colorbar(image, ax=axis, label="affinity Z[i -> j]")
    save_figure(figure, target)


def plot_strongest_pairs(tasks: list[str], history: list[dict[str, Any]], target: Path, count: int = 6) -> None:
    """The `count` task pairs of strongest final affinity over training; saved as PNG and PDF."""
    plt = pyplot()
    final = np.asarray(history[-1]["affinity"])
    pairs = [(i, j) for i in range(len(tasks)) for j in range(len(tasks)) if i != j]
    pairs.sort(key=lambda p: -abs(final[p]))
    steps = [h["step"] for h in history]
    figure, axis = plt.subplots(figsize=(7, 4))
    for i, j in pairs[:count]:
        axis.plot(steps, [h["affinity"][i][j] for h in history], label=f"{tasks[i]} -> {tasks[j]}")
    axis.axhline(0, color="grey", linewidth=0.5)
    axis.set_xlabel("step")
    axis.set_ylabel("running mean affinity")
    axis.legend(fontsize=6)
    save_figure(figure, target)

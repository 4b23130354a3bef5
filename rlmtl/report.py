"""`rlmtl report`: a Markdown report of a run with its per-task table and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlmtl.atomic import atomic_path, write_text_atomic
from rlmtl.errors import RlmtlError
from rlmtl.evaluation.results import EvalResult, results_markdown
from rlmtl.provenance import provenance_line


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _save_figure(figure: Any, target: Path) -> None:
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_success(result: EvalResult, target: Path) -> None:
    """Bar chart of success per task with 95% intervals and a dashed line at the overall mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result["per_task"])
    rates = [result["per_task"][t]["success_rate"] for t in tasks]
    low = [max(0.0, r - result["per_task"][t]["ci95"][0]) for t, r in zip(tasks, rates)]
    high = [max(0.0, result["per_task"][t]["ci95"][1] - r) for t, r in zip(tasks, rates)]
    figure, axis = plt.subplots(figsize=(max(6, 0.8 * len(tasks)), 4))
    axis.bar(range(len(tasks)), rates, yerr=[low, high], capsize=3, color="tab:blue")
    axis.axhline(result["overall"]["success_rate"], color="tab:red", linestyle="--", label=f"mean {result['overall']['success_rate']:.2f}")
    axis.set_xticks(range(len(tasks)), tasks, rotation=40, ha="right")
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("success rate")
    axis.legend(loc="lower right")
    _save_figure(figure, target)
    plt.close(figure)


def plot_training(metrics: list[dict[str, Any]], target: Path) -> None:
    """Per-task training loss, task weights and evaluation success over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "eval_success" in m]
    panels = 3 if evals else 2
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6))
    if logs:
        steps = [m["step"] for m in logs]
        for task in logs[0]["loss"]:
            axes[0].plot(steps, [m["loss"][task] for m in logs], label=task, linewidth=1)
            axes[1].plot(steps, [m["weight"][task] for m in logs], label=task, linewidth=1)
    axes[0].set_yscale("log")
    axes[0].set_title("training loss per task")
    axes[1].set_title("task weights")
    for axis in axes:
        axis.set_xlabel("step")
    axes[0].legend(fontsize=6)
    if evals:
        axes[2].plot([m["step"] for m in evals], [m["eval_success"] for m in evals], marker="o")
        axes[2].set_ylim(0, 1.05)
        axes[2].set_title("evaluation success (mean)")
    _save_figure(figure, target)
    plt.close(figure)


def write_report(run_dir: Path, extra: str = "") -> Path:
    """Write run_dir/report.md (and plots/) from eval.json, metrics.jsonl and timings.json;
    `extra` (Markdown) goes after the per-task table."""
    eval_path = run_dir / "eval.json"
    if not eval_path.is_file():
        raise RlmtlError(f"{eval_path}: not found (run `rlmtl eval {run_dir}` first)")
    result: EvalResult = json.loads(eval_path.read_text())
    plots = run_dir / "plots"
    plot_success(result, plots / "success_per_task.png")
    metrics = read_metrics(run_dir)
    lines = [f"# rlmtl report: {run_dir.name}", ""]
    lines += [
        f"Checkpoint `{result['checkpoint']}` (step {result['step']}), {result['backend']}/{result['suite']}, "
        f"{result['overall']['episodes']} evaluation episodes (seed {result['seed']}).",
        "",
    ]
    if result.get("trained_with"):
        lines += [f"Trained with {provenance_line(result['trained_with'])}.", ""]
    if result.get("provenance"):
        lines += [f"Evaluated with {provenance_line(result['provenance'])}.", ""]
    lines += [results_markdown(result), "![success per task](plots/success_per_task.png)", ""]
    if extra:
        lines += [extra]
    if metrics:
        plot_training(metrics, plots / "training.png")
        lines += ["![training curves](plots/training.png)", ""]
    timings = run_dir / "timings.json"
    wall_times = json.loads(timings.read_text()) if timings.is_file() else {}
    if wall_times:
        lines += ["| stage | wall time (s) |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in wall_times.items()] + [""]
    if result.get("videos"):
        lines += [
            "Videos: "
            + ", ".join(
                f"[{t}]({Path(p).relative_to(run_dir) if Path(p).is_relative_to(run_dir) else p})" for t, p in result["videos"].items()
            ),
            "",
        ]
    target = run_dir / "report.md"
    write_text_atomic(target, "\n".join(lines))
    return target

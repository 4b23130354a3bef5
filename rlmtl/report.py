"""`rlmtl report`: a Markdown report of a run with its per-task table and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rlmtl.atomic import write_text_atomic
from rlmtl.errors import RlmtlError
from rlmtl.evaluation.results import EvalResult, results_markdown
from rlmtl.figures import FIGURE_DPI, pyplot, save_figure, task_colors, task_legend, task_line_style
from rlmtl.provenance import provenance_line


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_success(result: EvalResult, target: Path) -> list[Path]:
    """Bar chart of success per task, one colour per task, with its 95% Wilson interval (the
    `ci95` of eval.json), a marker on every bar (so a success rate of 0 shows) and the
    successes/episodes above it, and a dashed line at the mean over tasks; saved as PNG and PDF."""
    plt = pyplot()
    tasks = list(result["per_task"])
    rows = [result["per_task"][t] for t in tasks]
    rates = [row["success_rate"] for row in rows]
    below = [max(0.0, rate - row["ci95"][0]) for rate, row in zip(rates, rows)]
    above = [max(0.0, row["ci95"][1] - rate) for rate, row in zip(rates, rows)]
    colors = task_colors(len(tasks))
    many = len(tasks) > 20
    figure, axis = plt.subplots(figsize=(min(16.0, max(6.0, 2.0 + 0.45 * len(tasks))), 4.2))
    positions = range(len(tasks))
    axis.bar(positions, rates, color=colors, edgecolor="black", linewidth=0.5)
    axis.errorbar(
        positions,
        rates,
        yerr=[below, above],
        fmt="none",
        ecolor="black",
        elinewidth=0.8,
        capsize=2 if many else 3,
        label="95% Wilson interval",
    )
    axis.scatter(positions, rates, marker="_", s=120, color="black", linewidths=1.5, zorder=3)  # a bar of height 0 still shows
    for position, row, top in zip(positions, rows, [r + a for r, a in zip(rates, above)]):
        axis.annotate(
            f"{row['successes']}/{row['episodes']}",
            (position, top),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=5 if many else 7,
            rotation=90 if many else 0,
        )
    mean = result["overall"]["success_rate"]
    axis.axhline(mean, color="black", linestyle="--", linewidth=1, label=f"mean over tasks {mean:.2f}")
    axis.set_xticks(list(positions), tasks, rotation=90 if many else 40, ha="center" if many else "right", fontsize=6 if many else 8)
    axis.set_xlim(-0.6, len(tasks) - 0.4)
    axis.set_ylim(0, 1.2 if many else 1.12)
    axis.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    axis.set_xlabel("task")
    axis.set_ylabel("success rate")
    axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return save_figure(figure, target)


def plot_training(metrics: list[dict[str, Any]], target: Path) -> list[Path]:
    """Per-task training loss, task weights and (when the run evaluated during training) success
    over optimizer steps, one colour per task with one task legend; saved as PNG and PDF."""
    plt = pyplot()
    logs = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "eval_success" in m]
    tasks = list(logs[0]["loss"]) if logs else list(evals[0].get("eval_per_task", {})) if evals else []
    colors = task_colors(len(tasks))
    panels = 3 if evals else 2
    figure, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.6), constrained_layout=True)
    handles: list[Any] = []
    steps = [m["step"] for m in logs]
    for index, task in enumerate(tasks):
        style = {"color": colors[index], "linestyle": task_line_style(index), "linewidth": 1.2}
        if logs:
            (line,) = axes[0].plot(steps, [m["loss"][task] for m in logs], **style)
            handles.append(line)
    _plot_weights(axes[1], logs, tasks, colors)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("training loss (log scale)")
    axes[0].set_title("training loss per task", fontsize=10)
    axes[1].set_ylabel("task weight")
    axes[1].set_title("task weights", fontsize=10)
    if evals:
        evaluation_lines = _plot_evaluations(axes[2], evals, tasks, colors)
        handles = handles or evaluation_lines
    for axis in axes:
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.25, linewidth=0.5)
    if handles:
        task_legend(figure, handles, tasks)
    return save_figure(figure, target)


def _plot_weights(axis: Any, logs: list[dict[str, Any]], tasks: list[str], colors: list[Any]) -> None:
    """Task weights over steps; one black line when every task has the same weights (uniform
    weighting), where coloured lines would hide each other."""
    steps = [m["step"] for m in logs]
    series = [[m["weight"][task] for m in logs] for task in tasks]
    if series and all(s == series[0] for s in series[1:]):
        axis.plot(steps, series[0], color="black", linewidth=1.2, label="every task (equal weights)")
        axis.legend(fontsize=8, frameon=False)
        return
    for index, values in enumerate(series):
        axis.plot(steps, values, color=colors[index], linestyle=task_line_style(index), linewidth=1.2)


def _plot_evaluations(axis: Any, evals: list[dict[str, Any]], tasks: list[str], colors: list[Any]) -> list[Any]:
    """Success during training: one thin line per task and the mean over tasks in black; returns the task lines."""
    steps = [m["step"] for m in evals]
    lines = []
    for index, task in enumerate(tasks):
        values = [m.get("eval_per_task", {}).get(task, float("nan")) for m in evals]
        (line,) = axis.plot(steps, values, color=colors[index], linestyle=task_line_style(index), linewidth=0.9, marker="o", markersize=2.5)
        lines.append(line)
    axis.plot(steps, [m["eval_success"] for m in evals], color="black", linewidth=2, marker="o", markersize=4, label="mean over tasks")
    axis.set_ylim(-0.04, 1.04)  # a success of 0 sits above the axis, not on it
    axis.set_ylabel("success rate")
    axis.set_title("evaluation during training", fontsize=10)
    axis.legend(fontsize=8, frameon=False)
    return lines


def conflict_records(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The metrics.jsonl records that carry a gradient-conflict measurement, in step order."""
    return [m for m in metrics if "gradient_cosine" in m]


def plot_gradient_conflict(metrics: list[dict[str, Any]], target: Path) -> list[Path]:
    """The gradient-conflict diagnostics (rlmtl/training/gradient_conflict.py): per-task gradient
    norms of the shared parameters over steps (task colours, one task legend), the fraction of
    conflicting task pairs and the mean pairwise cosine over steps, and the K x K cosine matrix at
    the first, middle and last measurements (the diagonal, always 1, in grey; one diverging scale
    symmetric about 0 up to the largest off-diagonal |cosine| shown; one colourbar); saved as PNG and PDF."""
    plt = pyplot()
    records = conflict_records(metrics)
    tasks = list(records[0]["grad_norm"])
    shown = [records[i] for i in sorted({0, len(records) // 2, len(records) - 1})]
    figure = plt.figure(figsize=(13.0, 8.6), constrained_layout=True)
    grid = figure.add_gridspec(2, 6, height_ratios=[1.0, 1.25])
    handles = _plot_gradient_norms(figure.add_subplot(grid[0, :3]), records, tasks)
    _plot_conflict_fraction(figure.add_subplot(grid[0, 3:]), records)
    width = 6 // len(shown)
    heatmaps = [figure.add_subplot(grid[1, i * width : (i + 1) * width]) for i in range(len(shown))]
    off_diagonal = ~np.eye(len(tasks), dtype=bool)
    limit = max(float(np.abs(np.asarray(m["gradient_cosine"])[off_diagonal]).max(initial=0.0)) for m in shown) or 1.0
    images = [_plot_cosine_matrix(axis, record, tasks, limit) for axis, record in zip(heatmaps, shown)]
    figure.colorbar(images[-1], ax=heatmaps, shrink=0.85, label="cosine of the gradients of tasks i and j (diagonal: 1, grey)")
    task_legend(figure, handles, tasks)
    return save_figure(figure, target)


def _smoothing_window(count: int) -> int:
    """Measurements per running mean: one gradient per task per step is noisy, so a long run's
    curves average about 1/25 of its measurements (1 = the measurements themselves)."""
    return max(1, count // 25)


def _running_mean(steps: list[int], values: list[float], window: int, log: bool = False) -> tuple[list[float], list[float]]:
    """(centre steps, means) of every `window` consecutive values (geometric means with `log`)."""
    if window <= 1:
        return list(map(float, steps)), values
    kernel = np.ones(window) / window
    series = np.log(values) if log else np.asarray(values, dtype=float)
    means = np.convolve(series, kernel, mode="valid")
    return np.convolve(steps, kernel, mode="valid").tolist(), (np.exp(means) if log else means).tolist()


def _smoothed_title(title: str, window: int) -> str:
    return title if window <= 1 else f"{title}\n(running mean over {window} measurements)"


def _plot_gradient_norms(axis: Any, records: list[dict[str, Any]], tasks: list[str]) -> list[Any]:
    """|g_k| over the measured steps, one line per task (log scale; a running geometric mean when
    there are many measurements); returns the lines."""
    steps = [m["conflict"]["step"] for m in records]
    window = _smoothing_window(len(records))
    colors = task_colors(len(tasks))
    lines = []
    for index, task in enumerate(tasks):
        x, y = _running_mean(steps, [m["grad_norm"][task] for m in records], window, log=True)
        (line,) = axis.plot(x, y, color=colors[index], linestyle=task_line_style(index), linewidth=1.2)
        lines.append(line)
    axis.set_yscale("log")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("gradient norm |g_k| (log scale)")
    axis.set_title(_smoothed_title("per-task gradient norm of the shared parameters", window), fontsize=10)
    axis.grid(alpha=0.25, linewidth=0.5)
    return lines


def _plot_conflict_fraction(axis: Any, records: list[dict[str, Any]]) -> None:
    """The fraction of task pairs with a negative cosine, and the mean pairwise cosine, over steps
    (running means when there are many measurements, over the measurements themselves in a light line)."""
    steps = [m["conflict"]["step"] for m in records]
    window = _smoothing_window(len(records))
    fractions = [m["conflict"]["fraction"] for m in records]
    cosines = [m["conflict"]["mean_cosine"] for m in records]
    if window > 1:
        axis.plot(steps, fractions, color="black", alpha=0.2, linewidth=0.6)
        axis.plot(steps, cosines, color="grey", alpha=0.3, linewidth=0.6)
    axis.plot(*_running_mean(steps, fractions, window), color="black", linewidth=1.5, label="fraction of pairs with cosine < 0")
    axis.plot(*_running_mean(steps, cosines, window), color="grey", linestyle="--", linewidth=1.2, label="mean pairwise cosine")
    axis.axhline(0, color="grey", linewidth=0.5)
    axis.set_ylim(min(-0.05, *(c - 0.05 for c in cosines)), 1.02)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("fraction / cosine")
    axis.set_title(_smoothed_title("gradient conflict between tasks", window), fontsize=10)
    axis.legend(fontsize=8, frameon=False)
    axis.grid(alpha=0.25, linewidth=0.5)


def _plot_cosine_matrix(axis: Any, record: dict[str, Any], tasks: list[str], limit: float) -> Any:
    """The K x K cosine matrix of one measurement on a diverging scale [-limit, limit] (red:
    conflicting), the diagonal in grey, task names on both axes in their task colours; returns the
    image (for the colourbar)."""
    cosine = np.ma.masked_array(record["gradient_cosine"], mask=np.eye(len(tasks), dtype=bool))
    colormap = pyplot().get_cmap("RdBu").with_extremes(bad="lightgrey")
    image = axis.imshow(cosine, cmap=colormap, vmin=-limit, vmax=limit)
    font = 6 if len(tasks) <= 20 else 4
    axis.set_xticks(range(len(tasks)), tasks, rotation=90, fontsize=font)
    axis.set_yticks(range(len(tasks)), tasks, fontsize=font)
    for labels in (axis.get_xticklabels(), axis.get_yticklabels()):
        for label, color in zip(labels, task_colors(len(tasks))):
            label.set_color(color)
    conflict = record["conflict"]
    axis.set_title(f"step {conflict['step']}: {conflict['fraction']:.0%} of pairs conflict", fontsize=9)
    axis.set_xlabel("task j")
    axis.set_ylabel("task i")
    return image


def conflict_summary(metrics: list[dict[str, Any]]) -> str:
    """report.md's line on the last gradient-conflict measurement."""
    last = conflict_records(metrics)[-1]
    tasks = len(last["grad_norm"])
    pairs = tasks * (tasks - 1) // 2
    conflict = last["conflict"]
    return (
        f"Gradient conflict at step {conflict['step']} (the last measurement): {round(conflict['fraction'] * pairs)} of the "
        f"{pairs} task pairs ({conflict['fraction']:.0%}) have shared-parameter gradients with a negative cosine; "
        f"mean pairwise cosine {conflict['mean_cosine']:.3f}."
    )


def write_report(run_dir: Path, extra: str = "") -> Path:
    """Write run_dir/report.md and its figures (plots/*.png and *.pdf) from eval.json,
    metrics.jsonl and timings.json; `extra` (Markdown) goes after the per-task table."""
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
    lines += [f"Each figure in `plots/` is a PNG at {FIGURE_DPI} dpi with a vector PDF of the same name beside it.", ""]
    if extra:
        lines += [extra]
    if metrics:
        plot_training(metrics, plots / "training.png")
        lines += ["![training curves](plots/training.png)", ""]
    if conflict_records(metrics):
        plot_gradient_conflict(metrics, plots / "gradient_conflict.png")
        lines += [conflict_summary(metrics), "", "![gradient conflict](plots/gradient_conflict.png)", ""]
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

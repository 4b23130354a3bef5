"""A comparison's results: `results.json`, `results.md` and the figure `comparison.png` (+ `.pdf`).

`results.json` (written atomically, after every comparison, also a partial one) holds the spec's
settings, methods, seeds and baseline, one row per finished run (setting, method, seed, folder,
per-task success, mean success, attempts and wall seconds summed over them, the last attempt's stage
times from timings.json, the gradient-conflict summary of diagnostics.py), the names of the runs without results, and per setting and method the
statistics of rlmtl/compare/statistics.py with the bootstrap settings and rliable's version.
`results.md` is its tables, with a line per setting on whether Auto-Lambda's reported ordering holds; the figure shows each setting's per-task success (mean over runs with
its 95% interval), methods side by side, beside each method's IQM with its interval.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlmtl import __version__
from rlmtl.atomic import write_text_atomic
from rlmtl.compare.diagnostics import run_diagnostics
from rlmtl.compare.runs import PlannedRun, read_attempts, run_state
from rlmtl.compare.spec import CompareSpec
from rlmtl.compare.statistics import method_statistics, require_rliable

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
FIGURE = "comparison.png"


def run_row(spec: CompareSpec, run: PlannedRun) -> dict[str, Any] | None:
    """The results of a finished run, or None when it has none yet."""
    if run_state(run)[0] != "done":
        return None
    evaluation = json.loads((run.folder / "eval.json").read_text(encoding="utf-8"))
    timings_path = run.folder / "timings.json"
    attempts = read_attempts(spec.out, run)
    return {
        "setting": run.setting,
        "method": run.method,
        "seed": run.seed,
        "name": run.name,
        "folder": str(run.folder),
        "success": evaluation["overall"]["success_rate"],
        "per_task": {task: row["success_rate"] for task, row in evaluation["per_task"].items()},
        "episodes_per_task": max((row["episodes_requested"] for row in evaluation["per_task"].values()), default=0),
        "attempts": len(attempts),
        "wall_s": round(sum(a.get("wall_s", 0.0) for a in attempts), 1),
        "timings": json.loads(timings_path.read_text(encoding="utf-8")) if timings_path.is_file() else {},
        "diagnostics": run_diagnostics(run.folder),
    }


def gather(spec: CompareSpec, runs: list[PlannedRun]) -> dict[str, Any]:
    """The content of results.json (see the module docstring)."""
    rliable_version = require_rliable()
    rows, missing = [], []
    for run in runs:
        row = run_row(spec, run)
        (rows.append(row) if row is not None else missing.append(run.name))
    statistics: dict[str, Any] = {}
    for setting in spec.settings:
        mine = [row for row in rows if row["setting"] == setting.name]
        if not mine:
            continue
        tasks = list(mine[0]["per_task"])
        scores = {
            method: np.array([[row["per_task"][t] for t in tasks] for row in sorted(mine, key=lambda r: r["seed"]) if row["method"] == method])
            for method in spec.methods
        }
        statistics[setting.name] = {"tasks": tasks, "methods": method_statistics(scores, tasks, spec.baseline, spec.bootstrap)}
        for method, row in statistics[setting.name]["methods"].items():
            measured = [r["diagnostics"]["all"]["conflict_fraction"] for r in mine if r["method"] == method and r.get("diagnostics")]
            row["conflict_fraction"] = float(np.mean(measured)) if measured else None
    return {
        "spec": str(spec.path),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rlmtl": __version__,
        "settings": {s.name: {"config": s.config, "overrides": list(s.overrides)} for s in spec.settings},
        "methods": list(spec.methods),
        "seeds": list(spec.seeds),
        "baseline": spec.baseline,
        "runs": rows,
        "missing": missing,
        "statistics": statistics,
        "bootstrap": {
            "library": f"rliable {rliable_version}",
            "kind": "stratified over runs (tasks fixed), percentile intervals",
            "reps": spec.bootstrap.reps,
            "seed": spec.bootstrap.seed,
            "confidence": spec.bootstrap.confidence,
        },
    }


def _fraction(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _interval(values: list[float]) -> str:
    return f"[{values[0]:.3f}, {values[1]:.3f}]"


# Auto-Lambda's reported ordering (Liu et al., TMLR 2022, NYUv2 and RLBench tables): Auto-λ ≥ Uncertainty ≥ DWA ≥ Equal
AUTO_LAMBDA_ORDER = ("auto_lambda", "uncertainty", "dwa", "uniform")


def auto_lambda_ordering(methods: dict[str, Any]) -> str | None:
    """One line saying whether Auto-Lambda's ordering holds by mean success in a setting (the paper
    compares means; the IQM saturates at 1 where most tasks are solved), and whether the intervals of
    neighbours overlap (None when one of the four methods has no runs)."""
    if not all(name in methods for name in AUTO_LAMBDA_ORDER):
        return None
    rows = [methods[name] for name in AUTO_LAMBDA_ORDER]
    holds = all(a["mean"] >= b["mean"] for a, b in zip(rows, rows[1:]))
    overlap = all(a["mean_ci"][0] <= b["mean_ci"][1] and b["mean_ci"][0] <= a["mean_ci"][1] for a, b in zip(rows, rows[1:]))
    values = ", ".join(f"{name} {row['mean']:.3f}" for name, row in zip(AUTO_LAMBDA_ORDER, rows))
    verdict = "holds" if holds else "does not hold"
    noise = "; every neighbouring pair's intervals overlap, so the order is within the seed noise" if overlap else ""
    return f"Auto-Lambda's ordering (Auto-λ ≥ Uncertainty ≥ DWA ≥ Equal) by mean success {verdict}: {values}{noise}."


def results_markdown(results: dict[str, Any]) -> str:
    """The tables of results.json: per setting, each method's IQM, P(improvement) and mean with
    their intervals, then per-task success."""
    confidence = round(100 * results["bootstrap"]["confidence"])
    baseline = results["baseline"]
    lines = [
        f"# Comparison `{results['spec']}`",
        "",
        f"IQM and mean of per-task success over runs × tasks; {confidence}% intervals from a stratified bootstrap over runs "
        f"({results['bootstrap']['reps']} resamples, {results['bootstrap']['library']}); P(improvement) = P(a run of the method "
        f"beats a run of {baseline} on a task), averaged over tasks; conflicting pairs = the fraction of task pairs whose "
        "shared-parameter gradients have a negative cosine, averaged over each run's measurements (diagnostics.every) and over runs.",
    ]
    for setting, block in results["statistics"].items():
        lines += [
            "",
            f"## {setting}",
            "",
            f"| method | runs | IQM | {confidence}% CI | P(improvement over {baseline}) | {confidence}% CI | mean | {confidence}% CI | conflicting pairs |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for method, row in block["methods"].items():
            improvement = row["improvement"]
            p_cells = f"{improvement['probability']:.2f} | {_interval(improvement['ci'])}" if improvement else "— | —"
            lines.append(
                f"| {method} | {row['runs']} | {row['iqm']:.3f} | {_interval(row['iqm_ci'])} | {p_cells} | {row['mean']:.3f} | {_interval(row['mean_ci'])} | {_fraction(row.get('conflict_fraction'))} |"
            )
        ordering = auto_lambda_ordering(block["methods"])
        if ordering:
            lines += ["", ordering]
        tasks = block["tasks"]
        lines += ["", "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
        for method, row in block["methods"].items():
            cells = [f"{row['per_task'][t]['mean']:.2f} {_interval(row['per_task'][t]['ci'])}" for t in tasks]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if results["missing"]:
        lines += ["", f"**Not finished ({len(results['missing'])}):** " + ", ".join(results["missing"])]
    return "\n".join(lines) + "\n"


def plot_comparison(results: dict[str, Any], target: Path) -> list[Path]:
    """Per setting, one row: per-task success (mean over runs, interval bars), methods side by side,
    and each method's IQM with its interval. Saved as a PNG and a PDF (rlmtl/figures.py)."""
    from rlmtl.figures import pyplot, save_figure

    plt = pyplot()
    blocks = results["statistics"]
    width_tasks = max(len(block["tasks"]) for block in blocks.values())
    figure, axes = plt.subplots(
        len(blocks), 2, figsize=(2 + 0.9 * width_tasks + 3, 3.2 * len(blocks)), squeeze=False, gridspec_kw={"width_ratios": [width_tasks, 3]}
    )
    colors = plt.get_cmap("tab10")
    for row, (setting, block) in enumerate(blocks.items()):
        methods, tasks = list(block["methods"]), block["tasks"]
        bar_width = 0.8 / len(methods)
        bars_axis, iqm_axis = axes[row]
        for index, method in enumerate(methods):
            stats = block["methods"][method]
            means = np.array([stats["per_task"][t]["mean"] for t in tasks])
            low = np.array([stats["per_task"][t]["ci"][0] for t in tasks])
            high = np.array([stats["per_task"][t]["ci"][1] for t in tasks])
            positions = np.arange(len(tasks)) - 0.4 + bar_width * (index + 0.5)
            bars_axis.bar(positions, means, bar_width, color=colors(index % 10), edgecolor="black", linewidth=0.4, label=method)
            bars_axis.scatter(positions, means, marker="_", s=60, color="black", linewidths=1.2, zorder=3)  # a bar of height 0 still shows
            bars_axis.errorbar(positions, means, yerr=[means - low, high - means], fmt="none", ecolor="black", elinewidth=0.8, capsize=1.5)
            iqm_axis.errorbar(
                [stats["iqm"]],
                [index],
                xerr=[[stats["iqm"] - stats["iqm_ci"][0]], [stats["iqm_ci"][1] - stats["iqm"]]],
                fmt="o",
                color=colors(index % 10),
                capsize=3,
            )
        bars_axis.set_xticks(np.arange(len(tasks)), [t.removesuffix("-v3") for t in tasks], rotation=30, ha="right", fontsize=8)
        bars_axis.set_ylim(0, 1.05)
        bars_axis.set_ylabel("success rate")
        bars_axis.set_title(f"{setting}: per-task success (mean over runs, 95% CI)", fontsize=9)
        iqm_axis.set_yticks(range(len(methods)), methods, fontsize=8)
        iqm_axis.set_ylim(-0.5, len(methods) - 0.5)
        iqm_axis.invert_yaxis()
        iqm_axis.set_xlim(0, 1.02)
        iqm_axis.set_xlabel("IQM of success")
        iqm_axis.set_title("IQM (95% CI)", fontsize=9)
    axes[0][0].legend(fontsize=7, ncol=min(len(results["methods"]), 6), loc="lower left", bbox_to_anchor=(0, 1.08), frameon=False, title="method")
    figure.tight_layout()
    return save_figure(figure, target)


def write_results(spec: CompareSpec, runs: list[PlannedRun]) -> dict[str, Any]:
    """results.json, results.md and (with at least one finished run) the figure in `spec.out`; returns the results."""
    results = gather(spec, runs)
    write_text_atomic(spec.out / RESULTS_JSON, json.dumps(results, indent=1) + "\n")
    markdown = results_markdown(results)
    if results["statistics"]:
        plot_comparison(results, spec.out / FIGURE)
        markdown += f"\n![per-task success and IQM]({FIGURE})\n"
    write_text_atomic(spec.out / RESULTS_MD, markdown)
    return results

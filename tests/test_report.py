"""`rlmtl report`'s figures are fit for a paper: PNGs at 200 dpi with a vector PDF beside each,
labelled axes on every panel, one colour per task with a task legend (in columns for 50 tasks),
per-task success with its Wilson interval, and a visible mark and count on a bar of 0 success."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.colors import to_hex
from PIL import Image

import rlmtl.report as report
from rlmtl.evaluation.results import summarise
from rlmtl.evaluation.rollout import EpisodeOutcome
from rlmtl.figures import FIGURE_DPI


def eval_result(tasks: list[str], successes: list[int], episodes: int = 10) -> dict:
    outcomes = {(t, e): EpisodeOutcome(e < successes[t], 50, e) for t in range(len(tasks)) for e in range(episodes)}
    result = dict(summarise(tasks, episodes, outcomes))
    result.update(checkpoint="checkpoints/best.pt", step=40, suite="mt10", backend="metaworld", seed=0)
    return result


def training_metrics(tasks: list[str], weights: str = "varied") -> list[dict]:
    metrics = []
    for step in range(10, 110, 10):
        weight = {t: (1.0 if weights == "equal" else 0.5 + i / len(tasks) + step / 1000) for i, t in enumerate(tasks)}
        metrics.append({"step": step, "loss": {t: 1.0 / (step + i) for i, t in enumerate(tasks)}, "weight": weight})
        if step % 50 == 0:
            per_task = {t: (0.0 if i == 0 else 0.5) for i, t in enumerate(tasks)}
            metrics.append({"step": step, "eval_success": float(np.mean(list(per_task.values()))), "eval_per_task": per_task})
    return metrics


@pytest.fixture
def captured(monkeypatch):
    """The figures the report draws, kept open (saving is stubbed out) so their artists can be read."""
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda figure, target: figures.append(figure) or [target])
    yield figures
    for figure in figures:
        report.pyplot().close(figure)


TASKS = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3"]


def test_figures_are_200_dpi_pngs_with_vector_pdfs_beside_them(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.json").write_text(json.dumps(eval_result(TASKS, [0, 3, 10, 7])))
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in training_metrics(TASKS)))
    report.write_report(run)
    for name in ("success_per_task", "training"):
        with Image.open(run / "plots" / f"{name}.png") as image:
            assert all(round(dpi) >= 200 for dpi in image.info["dpi"]), image.info  # pixels per metre, an integer, in the file
            assert image.size[0] >= 6 * FIGURE_DPI  # at least 6 inches wide at that resolution
        pdf = (run / "plots" / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and b"/Subtype /Image" not in pdf  # vector drawing, no embedded raster
    assert not [p for p in (run / "plots").iterdir() if ".tmp-" in p.name]
    assert "vector PDF" in (run / "report.md").read_text()


def test_success_bars_have_a_colour_per_task_intervals_and_a_visible_zero(captured, tmp_path):
    result = eval_result(TASKS, [0, 3, 10, 7])
    report.plot_success(result, tmp_path / "success.png")
    (axis,) = captured[0].axes
    assert axis.get_xlabel() and axis.get_ylabel()
    bars = axis.patches
    assert len({to_hex(bar.get_facecolor()) for bar in bars}) == len(TASKS)
    labels = [text.get_text() for text in axis.texts]
    assert labels == ["0/10", "3/10", "10/10", "7/10"]  # the count above every bar, 0 included
    markers = np.asarray(axis.collections[-1].get_offsets())  # a mark on every bar, at its height
    np.testing.assert_allclose(markers, [[0, 0.0], [1, 0.3], [2, 1.0], [3, 0.7]])
    (errors,) = [c for c in axis.containers if hasattr(c, "has_yerr") and c.has_yerr]
    segments = errors.lines[2][0].get_segments()
    for segment, task in zip(segments, TASKS):  # the interval drawn is eval.json's Wilson ci95
        np.testing.assert_allclose(sorted(segment[:, 1]), result["per_task"][task]["ci95"], atol=1e-12)


def test_training_panels_are_labelled_with_one_colour_per_task_and_a_legend(captured, tmp_path):
    report.plot_training(training_metrics(TASKS), tmp_path / "training.png")
    figure = captured[0]
    assert len(figure.axes) == 3
    for axis in figure.axes:
        assert axis.get_xlabel() and axis.get_ylabel(), axis.get_title()
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == TASKS
    loss_colours = [to_hex(line.get_color()) for line in figure.axes[0].lines]
    weight_colours = [to_hex(line.get_color()) for line in figure.axes[1].lines]
    assert len(set(loss_colours)) == len(TASKS) and weight_colours == loss_colours
    assert figure.axes[2].get_ylim()[0] < 0  # a task at success 0 is drawn above the axis, not on it


def test_equal_weights_are_one_labelled_line_not_hidden_overlaps(captured, tmp_path):
    report.plot_training(training_metrics(TASKS, weights="equal"), tmp_path / "training.png")
    weights = captured[0].axes[1]
    assert len(weights.lines) == 1 and "equal" in weights.get_legend().get_texts()[0].get_text()


def test_fifty_tasks_get_distinct_styles_and_a_legend_in_columns(captured, tmp_path):
    tasks = [f"task-{i}" for i in range(50)]
    report.plot_training(training_metrics(tasks), tmp_path / "training.png")
    figure = captured[0]
    styles = {(to_hex(line.get_color()), line.get_linestyle()) for line in figure.axes[0].lines}
    assert len(styles) == 50
    (legend,) = figure.legends
    assert legend._ncols >= 2 and len(legend.get_texts()) == 50


def conflict_metrics(tasks: list[str]) -> list[dict]:
    """training_metrics with a gradient-conflict measurement in every log record (steps 10..100): task
    0's gradient turns against the others' over training."""
    metrics = [m for m in training_metrics(tasks) if "loss" in m]
    k = len(tasks)
    for index, record in enumerate(metrics):
        against = -index / 10  # cosine of task 0 with every other task
        cosine = np.full((k, k), 0.2)
        cosine[0, :] = cosine[:, 0] = against
        np.fill_diagonal(cosine, 1.0)
        pairs = cosine[np.triu_indices(k, 1)]
        record["grad_norm"] = {t: 0.1 * (i + 1) / (1 + index) for i, t in enumerate(tasks)}
        record["conflict"] = {"step": record["step"], "fraction": float((pairs < 0).mean()), "mean_cosine": float(pairs.mean())}
        record["gradient_cosine"] = cosine.tolist()
    return metrics


def test_gradient_conflict_figure_has_norms_per_task_fractions_and_three_labelled_heatmaps(captured, tmp_path):
    report.plot_gradient_conflict(conflict_metrics(TASKS), tmp_path / "gradient_conflict.png")
    figure = captured[0]
    norms, fractions, *heatmaps, colourbar = figure.axes
    assert len(heatmaps) == 3
    for axis in (norms, fractions, *heatmaps):
        assert axis.get_xlabel() and axis.get_ylabel(), axis.get_title()
    assert norms.get_yscale() == "log"
    assert [to_hex(line.get_color()) for line in norms.lines] == [to_hex(c) for c in report.task_colors(len(TASKS))]
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == TASKS
    assert [axis.get_title().split(":")[0] for axis in heatmaps] == ["step 10", "step 60", "step 100"]  # first, middle, last
    for axis in heatmaps:
        assert [label.get_text() for label in axis.get_xticklabels()] == TASKS
        assert [label.get_text() for label in axis.get_yticklabels()] == TASKS
    last = heatmaps[-1].images[0]
    assert last.get_array()[0, 1] == pytest.approx(-0.9) and last.get_array().mask[0, 0]  # the diagonal is masked (grey)
    assert last.get_clim() == (pytest.approx(-0.9), pytest.approx(0.9))  # symmetric, up to the largest off-diagonal |cosine|
    assert colourbar.get_ylabel().startswith("cosine")


def test_report_has_the_conflict_figure_and_the_final_conflict_fraction(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.json").write_text(json.dumps(eval_result(TASKS, [0, 3, 10, 7])))
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in conflict_metrics(TASKS)))
    report.write_report(run)
    with Image.open(run / "plots" / "gradient_conflict.png") as image:
        assert all(round(dpi) >= 200 for dpi in image.info["dpi"])
    assert (run / "plots" / "gradient_conflict.pdf").read_bytes().startswith(b"%PDF")
    text = (run / "report.md").read_text()
    assert "Gradient conflict at step 100 (the last measurement): 3 of the 6 task pairs (50%)" in text
    assert "![gradient conflict](plots/gradient_conflict.png)" in text
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in training_metrics(TASKS)))  # diagnostics off
    (run / "plots" / "gradient_conflict.png").unlink()
    report.write_report(run)
    assert "Gradient conflict" not in (run / "report.md").read_text() and not (run / "plots" / "gradient_conflict.png").exists()


def test_many_measurements_are_drawn_as_running_means(captured, tmp_path):
    """One gradient per task per step is noisy: 100 measurements are drawn as running means over 4,
    geometric for the norms (log axis), the conflict fraction also as measured in a light line."""
    records = []
    for index in range(100):
        record = conflict_metrics(TASKS)[index % 10]
        records.append({**record, "conflict": {**record["conflict"], "step": 10 * (index + 1)}})
    records[0]["grad_norm"] = {t: 1e-4 for t in TASKS}  # one outlier among 4: the geometric mean damps it
    report.plot_gradient_conflict(records, tmp_path / "gradient_conflict.png")
    norms, fractions = captured[0].axes[:2]
    assert "running mean over 4" in norms.get_title()
    first = norms.lines[0]
    assert len(first.get_xdata()) == 97 and first.get_xdata()[0] == pytest.approx(25.0)
    expected = np.exp(np.mean(np.log([1e-4] + [records[i]["grad_norm"][TASKS[0]] for i in (1, 2, 3)])))
    assert first.get_ydata()[0] == pytest.approx(expected)
    assert [len(line.get_xdata()) for line in fractions.lines[:2]] == [100, 100]  # the measurements, light

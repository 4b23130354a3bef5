"""A run's gradient-conflict summary (rlmtl/compare/diagnostics.py), from its metrics.jsonl."""

from __future__ import annotations

import json

import pytest

from rlmtl.compare.diagnostics import DIAGNOSTICS, run_diagnostics


def test_the_summary_averages_every_measurement_and_the_last_quarter_and_is_kept(tmp_path):
    lines = [json.dumps({"step": 0, "lr": 0.1})]  # a record without a measurement
    for step, fraction in zip(range(100, 900, 100), [0.8, 0.6, 0.4, 0.2, 0.2, 0.2, 0.0, 0.0]):
        lines.append(json.dumps({"step": step, "conflict": {"fraction": fraction, "mean_cosine": -fraction}, "grad_norm": {"a": step, "b": 1.0}}))
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 9')  # and a torn last line
    summary = run_diagnostics(tmp_path)
    assert summary["measurements"] == 8 and summary["steps"] == [100, 800]
    assert summary["all"]["conflict_fraction"] == pytest.approx(0.3) and summary["all"]["mean_cosine"] == pytest.approx(-0.3)
    assert summary["last_quarter"]["conflict_fraction"] == pytest.approx(0.0) and summary["last_quarter"]["grad_norm"] == {"a": 750.0, "b": 1.0}
    (tmp_path / "metrics.jsonl").unlink()  # the kept summary is enough
    assert json.loads((tmp_path / DIAGNOSTICS).read_text()) == summary == run_diagnostics(tmp_path)


def test_a_run_without_measurements_has_no_summary(tmp_path):
    assert run_diagnostics(tmp_path) is None
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": {}}) + "\n")
    assert run_diagnostics(tmp_path) is None and not (tmp_path / DIAGNOSTICS).exists()


def test_auto_lambdas_ordering_line_says_whether_it_holds_and_whether_it_is_noise():
    from rlmtl.compare.report import auto_lambda_ordering

    def row(mean, low, high):
        return {"mean": mean, "mean_ci": [low, high]}

    clear = {"auto_lambda": row(0.9, 0.88, 0.92), "uncertainty": row(0.8, 0.78, 0.82), "dwa": row(0.7, 0.68, 0.72), "uniform": row(0.6, 0.58, 0.62)}
    assert auto_lambda_ordering(clear).startswith("Auto-Lambda's ordering (Auto-λ ≥ Uncertainty ≥ DWA ≥ Equal) by mean success holds: auto_lambda 0.900")
    assert "noise" not in auto_lambda_ordering(clear)
    noisy = {**clear, "uniform": row(0.95, 0.5, 0.99)}
    assert "does not hold" in auto_lambda_ordering(noisy) and "within the seed noise" not in auto_lambda_ordering(noisy)
    assert auto_lambda_ordering({k: v for k, v in clear.items() if k != "dwa"}) is None

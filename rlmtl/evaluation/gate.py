"""`rlmtl eval` as a CI gate: judge an eval result against success bars and render CI reports.

A result is an `EvalResult` (`rlmtl.evaluation.results`), the content of `eval.json`: `per_task`
{task: `TaskResult`}, `overall` (`OverallResult`), and `checkpoint`, `step`, `backend`, `suite`.
`overall.success_rate` is the mean of the per-task `success_rate` over ALL tasks: a task whose
every episode ended in an error counts as 0, so a crashed task cannot let the gate pass.
Two bars, each optional and in [0, 1]:

- `min_success`: the overall mean success (the mean of the per-task rates) must reach it;
- `min_task_success`: every task's success must reach it.

A rate equal to the bar passes (compared with a 1e-9 tolerance, so 0.7 and 0.9 average to a
passing 0.8). Nothing here reads or writes files; the CLI writes what these functions return.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from rlmtl.evaluation.results import EvalResult, OverallResult, TaskResult, results_markdown

SUITE_NAME = "rlmtl-eval"
_TOLERANCE = 1e-9


def validate_bar(value: float, flag: str = "bar") -> float:
    """`value` as a float in [0, 1]; ValueError naming `flag` otherwise (NaN included)."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{flag} must be a success rate in [0, 1], got {value:g}")
    return value


def below(rate: float, bar: float | None) -> bool:
    """True when a bar is set and `rate` falls short of it."""
    return bar is not None and rate < bar - _TOLERANCE


def _describe(row: TaskResult | OverallResult) -> str:
    """'success 0.500 (1/2 episodes, 95% CI 0.09–0.91)' from a per-task or overall row."""
    rate = float(row["success_rate"])
    episodes = row.get("episodes")
    details = []
    if episodes is not None:
        details.append(f"{row['successes']}/{episodes} episodes" if "successes" in row else f"{episodes} episodes")
    if row.get("ci95"):
        low, high = row["ci95"]
        details.append(f"95% CI {low:.2f}–{high:.2f}")
    return f"success {rate:.3f}" + (f" ({', '.join(details)})" if details else "")


def check_success(result: EvalResult, min_success: float | None = None, min_task_success: float | None = None) -> list[str]:
    """One line per shortfall (each task below `min_task_success`, then the overall mean below
    `min_success`), naming the task, its rate, its episodes and the bar; [] means the gate passes."""
    if min_success is not None:
        validate_bar(min_success, "--min-success")
    if min_task_success is not None:
        validate_bar(min_task_success, "--min-task-success")
    lines = []
    for task, row in result["per_task"].items():
        if below(row["success_rate"], min_task_success):
            lines.append(f"{task}: {_describe(row)} is below --min-task-success {min_task_success:g}")
    overall = result["overall"]
    if below(overall["success_rate"], min_success):
        lines.append(f"overall mean over {len(result['per_task'])} tasks: {_describe(overall)} is below --min-success {min_success:g}")
    return lines


def _properties(parent: ET.Element, values: dict[str, Any]) -> None:
    properties = ET.SubElement(parent, "properties")
    for name, value in values.items():
        if value is not None:
            ET.SubElement(properties, "property", name=name, value=str(value))


def _row_properties(row: TaskResult | OverallResult) -> dict[str, Any]:
    low, high = row.get("ci95") or (None, None)
    return {
        "success_rate": row["success_rate"],
        "successes": row.get("successes"),
        "episodes": row.get("episodes"),
        "ci95_low": low,
        "ci95_high": high,
        "mean_steps": row.get("mean_steps"),
    }


def _testcase(suite: ET.Element, classname: str, name: str, row: TaskResult | OverallResult, bar: float | None, flag: str) -> bool:
    """Append one testcase; returns True when it failed."""
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
    _properties(case, _row_properties(row))
    description = _describe(row)
    failed = below(row["success_rate"], bar)
    if failed:
        message = f"{description} is below {flag} {bar:g}"
        failure = ET.SubElement(case, "failure", message=message, type="SuccessBelowBar")
        failure.text = f"{name}: {message}"
    ET.SubElement(case, "system-out").text = f"{name}: {description}" + (f"; bar {flag} {bar:g}" if bar is not None else "; no bar")
    return failed


def junit_xml(result: EvalResult, min_success: float | None = None, min_task_success: float | None = None) -> str:
    """A JUnit XML report: one <testsuite name="rlmtl-eval"> with one <testcase> per task
    (classname `<backend>.<suite>`, failing below `min_task_success`) and an `overall` testcase
    (failing below `min_success`); each carries its success rate, 95% CI and episodes as properties."""
    check_success(result, min_success, min_task_success)  # validates the bars
    classname = f"{result.get('backend', 'rlmtl')}.{result.get('suite', 'eval')}"
    suite = ET.Element("testsuite", name=SUITE_NAME)
    _properties(
        suite,
        {
            "checkpoint": result.get("checkpoint"),
            "step": result.get("step"),
            "backend": result.get("backend"),
            "suite": result.get("suite"),
            "seed": result.get("seed"),
            "min_success": min_success,
            "min_task_success": min_task_success,
        },
    )
    failures = sum(
        _testcase(suite, classname, task, row, min_task_success, "--min-task-success") for task, row in result["per_task"].items()
    )
    failures += _testcase(suite, classname, "overall", result["overall"], min_success, "--min-success")
    suite.set("tests", str(len(result["per_task"]) + 1))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    suite.set("time", "0")
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def github_summary(result: EvalResult, min_success: float | None = None, min_task_success: float | None = None) -> str:
    """Markdown for a GitHub job summary: the per-task table and a pass/fail line (with the
    shortfalls listed when it fails)."""
    shortfalls = check_success(result, min_success, min_task_success)
    title = f"### rlmtl eval: `{result.get('checkpoint', '?')}` (step {result.get('step', '?')})"
    bars = []
    if min_success is not None:
        bars.append(f"overall mean ≥ {min_success:g}")
    if min_task_success is not None:
        bars.append(f"every task ≥ {min_task_success:g}")
    if shortfalls:
        verdict = f"**FAIL** ({'; '.join(bars)}): {len(shortfalls)} below the bar\n\n" + "\n".join(f"- {line}" for line in shortfalls)
    elif bars:
        verdict = f"**PASS** ({'; '.join(bars)})"
    else:
        verdict = "No success bar set (`--min-success`, `--min-task-success`)."
    return f"{title}\n\n{results_markdown(result)}\n{verdict}\n"

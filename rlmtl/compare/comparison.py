"""`rlmtl compare SPEC`: every (setting, method, seed) of a spec run once, then the results and statistics.

    spec (spec.py) -> runs and their states (runs.py) -> launcher: local.py (processes here) or
    slurm.py (submitit jobs), each run executed by job.py -> results.json / results.md / figure
    (report.py, statistics by rliable in statistics.py)

Nothing is written before the spec, every run's config and every existing run folder have been
checked. One `rlmtl compare` works in an `out` folder at a time (its `.rlmtl.lock`).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from rlmtl.compare.report import RESULTS_MD, write_results
from rlmtl.compare.runs import PlannedRun, check_runs, plan_runs
from rlmtl.compare.spec import CompareSpec, load_spec
from rlmtl.compare.statistics import INSTALL_HINT, require_rliable
from rlmtl.errors import RlmtlError, RunsUnfinished
from rlmtl.folder_lock import FolderLock


def require_submitit() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError as error:
        raise RlmtlError(f"launcher slurm submits through submitit, which cannot be imported ({error}): {INSTALL_HINT}") from None


def describe_plan(spec: CompareSpec, runs: list[PlannedRun], states: dict[str, tuple[str, str]]) -> str:
    """One line per run: its name, state and `rlmtl` command (what --dry-run prints)."""
    from rlmtl.compare.local import threads_per_run

    threads = threads_per_run(spec.parallel) if spec.launcher == "local" else spec.slurm.cpus_per_task
    lines = []
    for run in runs:
        state, why = states[run.name]
        command = "" if state == "done" else "  rlmtl " + shlex.join(run.command(threads, resume=state == "resume"))
        lines.append(f"{run.name}: {state} ({why}){command}")
    return "\n".join(lines)


def run_comparison(spec_path: str | Path, dry_run: bool = False, report_only: bool = False, wait: bool = True) -> int:
    """Run what is missing of the spec at `spec_path`, then write its results (see the module docstring).
    Returns 0 when every run has results; RunsUnfinished (exit 7) otherwise, after writing the results
    of the finished ones."""
    spec = load_spec(spec_path)
    require_rliable()
    if spec.launcher == "slurm" and not (dry_run or report_only):
        require_submitit()
    runs = plan_runs(spec)
    states = check_runs(runs)
    if dry_run:
        print(describe_plan(spec, runs, states))
        return 0
    spec.out.mkdir(parents=True, exist_ok=True)
    with FolderLock(spec.out, "rlmtl compare"):
        pending = [run for run in runs if check_runs([run])[run.name][0] != "done"]
        failed, queued = {}, {}
        if pending and not report_only:
            print(f"rlmtl compare: {len(runs) - len(pending)} of {len(runs)} runs done, {len(pending)} to run ({spec.launcher})", file=sys.stderr)
            failed, queued = _launch(spec, pending, wait)
        results = write_results(spec, runs)
    print((spec.out / RESULTS_MD).read_text(encoding="utf-8"))
    print(f"wrote {spec.out / 'results.json'}, {spec.out / RESULTS_MD}", file=sys.stderr)
    if results["missing"]:
        lines = [f"{len(results['missing'])} of {len(runs)} runs have no results yet:"]
        for name in results["missing"]:
            why = failed.get(name) or (f"SLURM job {queued[name]} not finished" if name in queued else "not run")
            lines.append(f"  {name}: {why}")
        raise RunsUnfinished("\n".join(lines))
    return 0


def _launch(spec: CompareSpec, pending: list[PlannedRun], wait: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Run `pending` with the spec's launcher: ({name: why} of failed runs, {name: job id} of SLURM jobs not waited for)."""
    if spec.launcher == "local":
        from rlmtl.compare.local import LocalLauncher

        return LocalLauncher(spec.out, spec.parallel).run(pending), {}
    from rlmtl.compare.slurm import SlurmLauncher

    launcher = SlurmLauncher(spec.out, spec.slurm)
    active = launcher.submit(pending)
    if not wait:
        return {}, active
    return launcher.finished_without_result(launcher.wait(active), pending), {}

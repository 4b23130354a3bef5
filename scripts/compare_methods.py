#!/usr/bin/env python
"""MT10 success per weighting method over seeds, in two settings, as a Markdown table.

`rlmtl compare configs/compare/mt10_weighting.yaml` is its successor (the same runs, with rliable's
statistics); this script stays because the README's table and results/weighting_comparison.json
were made with it, until that table is re-made with `rlmtl compare`.

    python scripts/compare_methods.py [--methods uniform,famo,...] [--seeds 0,1,2] [--settings default,hard]
                                      [--results results/weighting_comparison.json] [--table-only]

Each (setting, method, seed) is one `rlmtl run configs/compare_<setting>.yaml` in
runs/compare/<setting>-<method>-seed<seed>; a finished run (eval.json present) is not redone, so
the script resumes where it stopped. Results are gathered into `--results` (default
results/weighting_comparison.json; written atomically after every run) and printed as mean ± std
over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "weighting_comparison.json"
DEFAULT_METHODS = "uniform,famo,auto_lambda,hydalearn,pcgrad,cagrad"
PRIMARY = "peg-insert-side-v3"  # the auxiliary-mode methods' main task: BC's hardest MT10 task


def run_one(setting: str, method: str, seed: int) -> dict:
    name = f"{setting}-{method.replace('+', '_')}-seed{seed}"
    run_dir = ROOT / "runs" / "compare" / name
    eval_path = run_dir / "eval.json"
    if not eval_path.is_file():
        overrides = [f"name={name}", f"weighting.name={method}", f"train.seed={seed}"]
        if method.split("+")[0] == "hydalearn":
            overrides.append(f"weighting.primary_tasks=[{PRIMARY}]")
        command = [sys.executable, "-m", "rlmtl", "run", f"configs/compare_{setting}.yaml", "--no-progress", *overrides]
        if (run_dir / "checkpoints" / "last").is_file():
            command.append("--resume")
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True)
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    result = json.loads(eval_path.read_text())
    timings = run_dir / "timings.json"
    return {
        "success": result["overall"]["success_rate"],
        "per_task": {t: r["success_rate"] for t, r in result["per_task"].items()},
        "timings": json.loads(timings.read_text()) if timings.is_file() else {},
    }


def table(results: dict, settings: list[str], methods: list[str], seeds: list[int]) -> str:
    lines = ["| method | " + " | ".join(f"{s} (mean ± std over seeds)" for s in settings) + " |", "|---|" + "---|" * len(settings)]
    for method in methods:
        cells = []
        for setting in settings:
            values = [results[f"{setting}/{method}/{seed}"]["success"] for seed in seeds if f"{setting}/{method}/{seed}" in results]
            if not values:
                cells.append("—")
            else:
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f} (n={len(values)})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    from rlmtl.atomic import write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--settings", default="default,hard")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON file the results are kept in")
    parser.add_argument("--table-only", action="store_true", help="print the table of the results gathered so far; run nothing")
    args = parser.parse_args()
    methods, settings = args.methods.split(","), args.settings.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    for seed in [] if args.table_only else seeds:  # seeds outermost: a partial sweep still covers every method
        for setting in settings:
            for method in methods:
                results[f"{setting}/{method}/{seed}"] = run_one(setting, method, seed)
                write_text_atomic(args.results, json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(table(results, settings, methods, seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""One model for all tasks next to TAG's grouped models (k = 2, 3), as a Markdown table.

    python scripts/compare_groups.py [--ks 2,3] [--seeds 0] [--affinity runs/mt10-affinity-seed0/affinity.json]
    python scripts/compare_groups.py --suite mt50 [--one-model results/compare-mt50-methods/runs/mt50-uniform-seed0/eval.json]
        # MT50: configs/mt50.yaml for every run; --one-model reuses the finished uniform run of that seed

1. The affinity run (`rlmtl affinity AFFINITY_CONFIG`) if its affinity.json is missing (MT10:
   configs/mt10.yaml with data.demos_per_task=50, the data of the runs below).
2. One model on all tasks: `rlmtl run CONFIG` (MT10: configs/compare_default.yaml, the config of the
   default/uniform runs of `rlmtl compare configs/compare/mt10_weighting.yaml`).
3. For each k: `rlmtl run CONFIG --groups AFFINITY --k k`: one model per group with the same config,
   so every task gets the same steps and samples as in the single run.
Finished runs (eval.json present) are not redone, interrupted ones resume. Results go to RESULTS
(atomically, after every run) and the table is printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Suite:
    """What one suite's comparison runs: the affinity run's config, the runs' config, where results go."""

    affinity_config: str
    config: str
    results: Path
    run_prefix: str  # the one model's run folder: runs/compare/<run_prefix>-uniform-seed<s>
    group_prefix: str  # the grouped runs' folders: runs/compare/<group_prefix>groups-k<k>-seed<s>
    affinity_overrides: tuple[str, ...] = ()  # of the affinity run


SUITES = {
    "mt10": Suite(
        "configs/mt10.yaml", "configs/compare_default.yaml", ROOT / "results" / "groups_comparison.json", "default", "", ("data.demos_per_task=50",)
    ),
    "mt50": Suite("configs/mt50.yaml", "configs/mt50.yaml", ROOT / "results" / "groups_comparison_mt50.json", "mt50", "mt50-"),
}


def rlmtl(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "rlmtl", *args, "--no-progress"], cwd=ROOT, check=True)


def run_once(config: str, name: str, extra: list[str], seed: int, finished: Path | None = None) -> dict:
    """The row of run `name` (`rlmtl run config *extra`), run unless done; `finished`: the eval.json
    of a run of the same config and seed made elsewhere (e.g. by `rlmtl compare`), used instead."""
    run_dir = ROOT / "runs" / "compare" / name
    if finished is None and not (run_dir / "eval.json").is_file():
        resume = ["--resume"] if run_dir.is_dir() else []
        rlmtl("run", config, *extra, *resume, f"name={name}", f"train.seed={seed}", "out_dir=runs/compare")  # where run_dir is (cwd ROOT)
    result = json.loads((finished or run_dir / "eval.json").read_text())
    row = {"success": result["overall"]["success_rate"], "per_task": {t: r["success_rate"] for t, r in result["per_task"].items()}}
    if "groups" in result:
        row["groups"] = result["groups"]["groups"]
    return row


def table(results: dict) -> str:
    tasks = list(next(iter(results.values()))["per_task"])
    if len(tasks) > 12:
        return compact_table(results)
    lines = ["| models | " + " | ".join(t.removesuffix("-v3") for t in tasks) + " | mean |", "|---|" + "---|" * (len(tasks) + 1)]
    for key, row in results.items():
        cells = [f"{row['per_task'][t]:.2f}" for t in tasks]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | **{row['success']:.3f}** |")
    return "\n".join(lines)


def compact_table(results: dict) -> str:
    """Many tasks: each row's mean and the tasks it solves more or less often than the one model of its seed."""
    lines = ["| models | mean | tasks above one model | tasks below one model |", "|---|---|---|---|"]
    for key, row in results.items():
        single = results.get(f"one model, seed {key.rsplit('seed ', 1)[-1]}", row)
        above, below = [], []
        for task, rate in row["per_task"].items():
            gap = rate - single["per_task"][task]
            if gap > 0:
                above.append(f"{task.removesuffix('-v3')} {gap:+.2f}")
            elif gap < 0:
                below.append(f"{task.removesuffix('-v3')} {gap:+.2f}")
        lines.append(f"| {key} | **{row['success']:.3f}** | {', '.join(above) or '—'} | {', '.join(below) or '—'} |")
    return "\n".join(lines)


def main() -> int:
    from rlmtl.atomic import write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="mt10")
    parser.add_argument("--ks", default="2,3")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--affinity", default="", help="affinity.json (default: runs/<suite>-affinity-seed0/affinity.json)")
    parser.add_argument("--one-model", type=Path, default=None, help="eval.json of a finished one-model run of the same config and seed (one seed only)")
    parser.add_argument("--table-only", action="store_true", help="print the table of the results gathered so far")
    args = parser.parse_args()
    suite = SUITES[args.suite]
    if args.one_model is not None and "," in args.seeds:
        parser.error("--one-model stands for one seed's run: give one seed with --seeds")
    affinity = args.affinity or f"runs/{args.suite}-affinity-seed0/affinity.json"
    results = json.loads(suite.results.read_text()) if suite.results.is_file() else {}
    if not args.table_only:
        if not (ROOT / affinity).is_file():
            rlmtl("affinity", suite.affinity_config, *suite.affinity_overrides)
        for seed in [int(s) for s in args.seeds.split(",")]:
            one_model = run_once(suite.config, f"{suite.run_prefix}-uniform-seed{seed}", [], seed, args.one_model)
            results[f"one model, seed {seed}"] = one_model
            write_text_atomic(suite.results, json.dumps(results, indent=1) + "\n")
            for k in [int(k) for k in args.ks.split(",")]:
                name = f"{suite.group_prefix}groups-k{k}-seed{seed}"
                grouped = run_once(suite.config, name, ["--groups", affinity, "--k", str(k)], seed)
                results[f"TAG k={k}, seed {seed}"] = grouped
                write_text_atomic(suite.results, json.dumps(results, indent=1) + "\n")
    print(table(results))
    for key, row in results.items():
        if "groups" in row:
            print(f"{key}: " + " | ".join(", ".join(g) for g in row["groups"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

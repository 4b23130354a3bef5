#!/usr/bin/env python
"""MT10: one model for all tasks next to TAG's grouped models (k = 2, 3), as a Markdown table.

    python scripts/compare_groups.py [--ks 2,3] [--seeds 0] [--affinity runs/mt10-affinity-seed0/affinity.json]

1. The affinity run (`rlmtl affinity configs/mt10.yaml`) if its affinity.json is missing.
2. One model on all tasks: `rlmtl run configs/compare_default.yaml` (the config of the default/uniform
   runs of `rlmtl compare configs/compare/mt10_weighting.yaml`).
3. For each k: `rlmtl run configs/compare_default.yaml --groups AFFINITY --k k`: one model per
   group with the same config, so every task gets the same steps and samples as in the single run.
Finished runs (eval.json present) are not redone. Results go to results/groups_comparison.json
(atomically, after every run) and the table is printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "groups_comparison.json"
CONFIG = "configs/compare_default.yaml"


def rlmtl(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "rlmtl", *args, "--no-progress"], cwd=ROOT, check=True)


def run_once(name: str, extra: list[str], seed: int) -> dict:
    run_dir = ROOT / "runs" / "compare" / name
    if not (run_dir / "eval.json").is_file():
        resume = ["--resume"] if run_dir.is_dir() else []
        rlmtl("run", CONFIG, *extra, *resume, f"name={name}", f"train.seed={seed}")
    result = json.loads((run_dir / "eval.json").read_text())
    row = {"success": result["overall"]["success_rate"], "per_task": {t: r["success_rate"] for t, r in result["per_task"].items()}}
    if "groups" in result:
        row["groups"] = result["groups"]["groups"]
    return row


def table(results: dict) -> str:
    tasks = list(next(iter(results.values()))["per_task"])
    lines = ["| models | " + " | ".join(t.removesuffix("-v3") for t in tasks) + " | mean |", "|---|" + "---|" * (len(tasks) + 1)]
    for key, row in results.items():
        cells = [f"{row['per_task'][t]:.2f}" for t in tasks]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | **{row['success']:.3f}** |")
    return "\n".join(lines)


def main() -> int:
    from rlmtl.atomic import write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="2,3")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--affinity", default="runs/mt10-affinity-seed0/affinity.json")
    parser.add_argument("--table-only", action="store_true", help="print the table of the results gathered so far")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if not args.table_only:
        if not (ROOT / args.affinity).is_file():
            rlmtl("affinity", "configs/mt10.yaml")
        for seed in [int(s) for s in args.seeds.split(",")]:
            results[f"one model, seed {seed}"] = run_once(f"default-uniform-seed{seed}", [], seed)
            write_text_atomic(RESULTS, json.dumps(results, indent=1) + "\n")
            for k in [int(k) for k in args.ks.split(",")]:
                grouped = run_once(f"groups-k{k}-seed{seed}", ["--groups", args.affinity, "--k", str(k)], seed)
                results[f"TAG k={k}, seed {seed}"] = grouped
                write_text_atomic(RESULTS, json.dumps(results, indent=1) + "\n")
    print(table(results))
    for key, row in results.items():
        if "groups" in row:
            print(f"{key}: " + " | ".join(", ".join(g) for g in row["groups"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

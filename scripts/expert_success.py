"""How often each task's scripted expert succeeded while `rlmtl collect` wrote a dataset.

Collection keeps the successful expert episodes only and records, per task, how many attempts it
made and how many succeeded (`/data/<task>` attributes `attempts`, `successes`, `num_demos`,
`requested_demos`); a task whose expert fails more often gets more attempts, up to
`data.max_attempts_per_demo` x the request, so no task is dropped silently: one that fell short
is listed with its shortfall. The success rate is `successes / attempts` over every attempt made
on the dataset's training scenes (an attempt that crashed on every rerun counts as a failure).
Datasets written before `successes` was recorded give `num_demos / attempts`, a lower bound
(collection asks for 10% more attempts than it still needs, and drops successes beyond the request).

    python scripts/expert_success.py data/mt50-state-50demos-seed0-<fingerprint>.h5 [--markdown]
"""

from __future__ import annotations

import argparse
import sys

from rlmtl.data.dataset import read_attrs


def expert_rows(path: str) -> list[dict[str, object]]:
    """One row per task, in the dataset's order: task, demos kept, attempts, requested, success rate."""
    import h5py

    tasks = read_attrs(path)["tasks"]
    rows = []
    with h5py.File(path, "r") as handle:
        for task in tasks:
            attrs = handle[f"data/{task}"].attrs
            demos, attempts, requested = int(attrs["num_demos"]), int(attrs["attempts"]), int(attrs["requested_demos"])
            successes = int(attrs.get("successes", demos))
            rows.append({"task": task, "demos": demos, "attempts": attempts, "successes": successes, "requested": requested,
                         "success": successes / max(attempts, 1)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--markdown", action="store_true", help="a markdown table (else one line per task)")
    args = parser.parse_args()
    rows = expert_rows(args.dataset)
    short = [row for row in rows if row["demos"] < row["requested"]]
    if args.markdown:
        print("| task | expert success (successes / attempts) | demos kept |")
        print("|---|---|---|")
        for row in rows:
            print(f"| {row['task']} | {row['success']:.2f} ({row['successes']}/{row['attempts']}) | {row['demos']}/{row['requested']} |")
    else:
        for row in rows:
            print(f"{row['task']:32s} {row['success']:.2f}  {row['successes']}/{row['attempts']} attempts, {row['demos']}/{row['requested']} demos")
    mean = sum(row["success"] for row in rows) / len(rows)
    print(f"\n{len(rows)} tasks, mean expert success {mean:.3f}; below 0.9: {sum(row['success'] < 0.9 for row in rows)}; "
          f"short of the requested demos: {', '.join(row['task'] for row in short) or 'none'}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Print a run's per-task success table and stage wall times as Markdown (what the README shows).

python scripts/results_table.py runs/mt10-uniform-seed0
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    from rlmtl.evaluation.results import results_markdown

    run = Path(argv[0])
    result = json.loads((run / "eval.json").read_text())
    print(results_markdown(result))
    timings = run / "timings.json"
    if timings.is_file():
        times = json.loads(timings.read_text())
        total = sum(times.values())
        print(" · ".join(f"{stage} {seconds:.0f} s" for stage, seconds in times.items()) + f" · total {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

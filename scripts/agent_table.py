#!/usr/bin/env python
"""The README's agent table: action head x encoder x setting, from `rlmtl compare` results.

    rlmtl compare configs/compare/mt10_agents_state.yaml     # MT10 from state
    rlmtl compare configs/compare/mt10_agents_rgb.yaml       # MT10 from a camera
    python scripts/agent_table.py results/compare-mt10-agents-state/results.json results/compare-mt10-agents-rgb/results.json

Each setting of a comparison is one agent variant (its config overrides say what differs from the
setting's config). One row per setting: the head, the image encoder, the other overrides, the
runs (seeds) finished, the mean success over 50 episodes per task of each run, their mean and the
lowest, and the mean training and evaluation wall time of the runs (their last attempt's stage times,
timings.json, on the machine that ran them). Runs that were stopped and resumed count only their
last attempt's time, marked with '*'.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def describe(overrides: list[str], base: dict[str, str]) -> tuple[str, str, str]:
    """(head, image encoder, other overrides) of a setting's overrides over its config's values."""
    values = dict(base)
    others = []
    for item in overrides:
        key, _, value = item.partition("=")
        if key in ("agent.head", "agent.image_encoder"):
            values[key] = value
        else:
            others.append(item)
    return values["agent.head"], values["agent.image_encoder"], ", ".join(others) or "—"


def config_values(config_path: str) -> dict[str, str]:
    from rlmtl.config import load_config

    config = load_config(ROOT / config_path if not Path(config_path).is_absolute() else config_path)
    encoder = config.agent.image_encoder if any(k.startswith("rgb_") for k in config.agent.obs_keys) else "— (state)"
    return {"agent.head": config.agent.head, "agent.image_encoder": encoder, "name": config.name or Path(config_path).stem}


def rows_of(results: dict) -> list[str]:
    lines = []
    for setting, spec in results["settings"].items():
        runs = sorted((r for r in results["runs"] if r["setting"] == setting), key=lambda r: r["seed"])
        base = config_values(spec["config"])
        head, encoder, others = describe(spec["overrides"], base)
        if not runs:
            lines.append(f"| {setting} | {spec['config']} | {head} | {encoder} | {others} | 0 | — | — | — | — | — |")
            continue
        successes = [r["success"] for r in runs]
        resumed = any(r["attempts"] > 1 for r in runs)
        train = statistics.mean(r["timings"].get("train", float("nan")) for r in runs)
        evaluate = statistics.mean(r["timings"].get("evaluate", float("nan")) for r in runs)
        mark = "*" if resumed else ""
        lines.append(
            f"| {setting} | {spec['config']} | {head} | {encoder} | {others} | {len(runs)} | "
            + ", ".join(f"{s:.3f}" for s in successes)
            + f" | **{statistics.mean(successes):.3f}** | {min(successes):.3f} | {train:.0f}{mark} | {evaluate:.0f}{mark} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="results.json files of `rlmtl compare`")
    args = parser.parse_args()
    lines = [
        "| setting | config | head | image encoder | other overrides | runs | success per seed | mean | lowest | train s | eval s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in args.results:
        lines += rows_of(json.loads(Path(path).read_text(encoding="utf-8")))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

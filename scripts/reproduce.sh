#!/usr/bin/env bash
# Reproduce every number in the README on this machine (after scripts/setup.sh):
# the main job (state), the image job, rlmtl against plain loops (benchmark_speed.py, which also runs
# bench_standalone.py), the throughput, weighting-cost and evaluation-load benchmarks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
RLMTL=${RLMTL:-.venv/bin/rlmtl}
SECONDS=0
"$RLMTL" run configs/mt10.yaml --no-progress
echo "main job wall time: ${SECONDS} s"
"$PY" scripts/results_table.py runs/mt10-uniform-seed0
SECONDS=0
"$RLMTL" run configs/mt10_rgb.yaml --no-progress
echo "image job wall time: ${SECONDS} s"
"$PY" scripts/results_table.py runs/mt10_rgb
"$PY" scripts/benchmark_speed.py configs/mt10.yaml --checkpoint runs/mt10-uniform-seed0
"$PY" scripts/benchmark.py configs/mt10.yaml --checkpoint runs/mt10-uniform-seed0
"$PY" scripts/bench_weighting.py configs/mt10.yaml
MUJOCO_GL=${MUJOCO_GL:-egl} "$PY" scripts/bench_eval_load.py --tasks 10 --episodes 100
# Longer sweeps (resumable; hours on a 2-core CPU): the method table and the grouped-model comparison.
# .venv/bin/rlmtl compare configs/compare/mt10_weighting.yaml && "$PY" scripts/compare_groups.py

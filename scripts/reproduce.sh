#!/usr/bin/env bash
# Reproduce every number in the README on this machine (after scripts/setup.sh):
# the main job (state), the image job, and the throughput benchmark.
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
"$PY" scripts/benchmark.py configs/mt10.yaml

#!/usr/bin/env bash
# The GPU check, one command on a CUDA machine (after `bash scripts/setup.sh` with a CUDA build of torch):
# every weighting method trains with no host sync between log intervals (scripts/gpu_check.py), then the tests
# marked `cuda`. Exit non-zero when either fails. Usage: bash scripts/gpu_check.sh [STEPS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-.venv/bin/python}
"$python" scripts/gpu_check.py --steps "${1:-300}"
"$python" -m pytest -q -m cuda -rs tests/test_cuda.py

#!/usr/bin/env bash
# Set up rlmtl on a fresh machine: a virtual environment in .venv with the CPU build of torch,
# rlmtl (editable) with its test extras, and the EGL libraries MuJoCo renders with headless.
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}   # the CPU wheel; GPU users: TORCH_SPEC=torch (CUDA build)

if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing EGL/Mesa for headless MuJoCo rendering" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
    else
        echo "setup: libEGL.so.1 not found; install libegl1 libegl-mesa0 libgl1-mesa-dri (or set MUJOCO_GL=osmesa with libosmesa6)" >&2
    fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e '.[dev]'
.venv/bin/python -c "import torch, metaworld, mujoco, rlmtl; print(f'setup: rlmtl {rlmtl.__version__}, torch {torch.__version__}, mujoco {mujoco.__version__}')"

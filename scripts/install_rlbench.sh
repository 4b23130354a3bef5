#!/usr/bin/env bash
# Install PyRep and RLBench, pinned by commit, into a Python environment that already has rlmtl, on a machine where
# CoppeliaSim 4.1.0 is unpacked at $COPPELIASIM_ROOT. docker/rlbench.Dockerfile runs this; so can a user outside Docker.
#   COPPELIASIM_ROOT=/opt/coppeliasim bash scripts/install_rlbench.sh [PYTHON]      (PYTHON: default .venv/bin/python)
# Why a script and not a pip extra: neither project is on PyPI (the PyPI package named `pyrep` is an unrelated
# project), both freeze their version strings (so only a commit pins them), and PyRep's setup.py builds cffi bindings
# against $COPPELIASIM_ROOT/libcoppeliaSim.so and appends allowOldEduRelease=7501 to $COPPELIASIM_ROOT/system/usrset.txt
# (PyRep setup.py, cffi_build/cffi_build.py), so it needs cffi in the environment and --no-build-isolation.
# RLBench's setup.py asks for an unpinned `pyrep @ git+...`, so RLBench goes in with --no-deps after its dependencies
# (RLBench setup.py: numpy, Pillow, pyquaternion, scipy, natsort; `import rlbench` also needs gymnasium,
# rlbench/__init__.py). Exit codes: 2 bad arguments or no CoppeliaSim, 1 an install step failed.
set -euo pipefail

PYREP_COMMIT=${PYREP_COMMIT:-8f420be8064b1970aae18a9cfbc978dfb15747ef}
RLBENCH_COMMIT=${RLBENCH_COMMIT:-02720bba4c73fe02eb75df946b8791b806028a9d}
python=${1:-.venv/bin/python}

fail() { echo "install_rlbench: $1" >&2; exit "${2:-1}"; }
[ -x "$python" ] || command -v "$python" >/dev/null || fail "$python: no such Python (give the environment's python)" 2
[ -n "${COPPELIASIM_ROOT:-}" ] || fail "COPPELIASIM_ROOT is not set (unpack CoppeliaSim 4.1.0 Edu and point it there)" 2
[ -f "$COPPELIASIM_ROOT/libcoppeliaSim.so" ] || fail "$COPPELIASIM_ROOT/libcoppeliaSim.so not found: COPPELIASIM_ROOT is not a CoppeliaSim 4.1.0 folder" 2
"$python" -c "import rlmtl" 2>/dev/null || fail "$python cannot import rlmtl: install rlmtl into that environment first" 2

work=$(mktemp -d "${TMPDIR:-/tmp}/rlmtl-pyrep.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$python" -m pip install --no-cache-dir cffi
git clone --quiet https://github.com/stepjam/PyRep.git "$work/PyRep"
git -C "$work/PyRep" checkout --quiet "$PYREP_COMMIT"
"$python" -m pip install --no-cache-dir --no-build-isolation "$work/PyRep"
"$python" -m pip install --no-cache-dir natsort numpy Pillow pyquaternion scipy gymnasium
"$python" -m pip install --no-cache-dir --no-deps "git+https://github.com/stepjam/RLBench.git@$RLBENCH_COMMIT"
"$python" -c "import pyrep, rlbench; from rlmtl.envs.rlbench_backend import load_api; load_api(); print('install_rlbench: PyRep $PYREP_COMMIT and RLBench $RLBENCH_COMMIT import')"

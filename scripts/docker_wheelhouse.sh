#!/usr/bin/env bash
# Fill a wheelhouse for an offline `docker build` of docker/Dockerfile: torch (the CPU wheel by default) and every
# runtime dependency of rlmtl, plus the build backend, as binary wheels for the image's Python (3.11 on bookworm).
# Usage: scripts/docker_wheelhouse.sh DIR     (DIR inside the repository, e.g. docker/wheels; it is git-ignored)
# Env: PYTHON (default .venv/bin/python, else python3; must match the image's Python version), TORCH_SPEC.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dest=${1:?usage: docker_wheelhouse.sh DIR}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

mkdir -p "$dest"
# The runtime dependencies as pyproject.toml lists them, so the wheelhouse follows the project without a second list.
mapfile -t deps < <("$PYTHON" -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")')
# torch first: pip resolves it the way this machine's pip configuration does (a local index or find-links here,
# PyPI elsewhere; pass TORCH_SPEC with an --index-url for PyTorch's CPU index if PyPI's CUDA build is not wanted).
# (Extra index URLs that hold no copy of a package make pip warn once per package; those lines are dropped.)
"$PYTHON" -m pip download -q --only-binary=:all: -d "$dest" "$torch_spec" "${deps[@]}" 'setuptools>=68' wheel \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
echo "docker_wheelhouse: $(find "$dest" -name '*.whl' | wc -l) wheels, $(du -sh "$dest" | cut -f1) in $dest"

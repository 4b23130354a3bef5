#!/usr/bin/env bash
# The reader environment of the interchange tests (tests/data/test_external_readers.py): .venv-io with
# robomimic's and lerobot's own dataset classes, which read what `rlmtl export` writes.
#
# It is a virtual environment of its own because lerobot 0.4.4 (the current `lerobot` on PyPI) pins
# torch<2.11 and torchvision<0.26, and the torchvision wheels on PyPI need torch's CUDA libraries:
# beside rlmtl's CPU torch 2.13 torchvision fails to import ("operator torchvision::nms does not
# exist"). So .venv-io gets lerobot's pins, torch 2.10.0 from PyPI (a CUDA build, about 7 GB
# installed; it runs on the CPU), torchvision 0.25.0 and torchcodec 0.10.0 (lerobot's default
# video decoder, which loads the system FFmpeg). lerobot and robomimic are installed without their
# dependencies (lerobot's include robot drivers, wandb, rerun; robomimic's egl_probe builds with
# cmake), and then what their dataset classes import. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=${RLMTL_IO_VENV:-.venv-io}

if ! ldconfig -p 2>/dev/null | grep -q 'libavcodec.so'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup_io_readers: installing FFmpeg's libraries (torchcodec decodes with them)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
    else
        echo "setup_io_readers: FFmpeg's libraries (libavcodec) not found; install ffmpeg" >&2
    fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --no-cache-dir)
"${PIP[@]}" torch==2.10.0 torchvision==0.25.0 torchcodec==0.10.0
"${PIP[@]}" --no-deps lerobot==0.4.4 robomimic==0.3.0
"${PIP[@]}" "datasets>=4,<5" "huggingface-hub>=0.34.2,<0.36" "accelerate>=1.10,<2" "av>=15,<16" "packaging>=24.2,<26" \
    "jsonlines>=4,<5" termcolor h5py tqdm pillow
HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "
import lerobot, robomimic, torch, torchcodec
from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION, LeRobotDataset
from robomimic.utils.dataset import SequenceDataset
print(f'setup_io_readers: lerobot {lerobot.__version__} (dataset {CODEBASE_VERSION}), robomimic {robomimic.__version__}, torch {torch.__version__}, torchcodec {torchcodec.__version__}')
"

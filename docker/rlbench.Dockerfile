# rlmtl with the RLBench backend: CoppeliaSim 4.1.0 Edu, PyRep and RLBench pinned by commit, rendering under Xvfb.
# Ubuntu 22.04 by default: every known working CoppeliaSim 4.1 recipe runs Ubuntu 20.04 or 22.04 (RLBench's and PyRep's
# CI run ubuntu-20.04; allenai/vla-evaluation-harness's RLBench image is built on CUDA's ubuntu22.04), and the tarball
# is CoppeliaSim's Ubuntu 20.04 build. Its python3 is 3.10, which rlmtl supports.
# The recipe follows RLBench/PyRep CI and allenai/vla-evaluation-harness PR #107:
# CoppeliaSim is unpacked before PyRep is built (PyRep links libcoppeliaSim and edits system/usrset.txt), Xvfb runs with
# `+extension GLX +render`, QT_QPA_PLATFORM=xcb (`offscreen` renders all-black frames), tini reaps CoppeliaSim processes.
#
# Build (from the repository root):
#   docker build -f docker/rlbench.Dockerfile -t rlmtl-rlbench .
#   docker build -f docker/rlbench.Dockerfile --target test -t rlmtl-rlbench-test .   (adds the tests and the dev extra)
# The stage that needs no CoppeliaSim can be built alone (`--target rlmtl-venv`). Build arguments:
#   BASE_IMAGE        an Ubuntu 22.04 or 20.04 image with apt (default ubuntu:22.04); its python3 (>= 3.10) runs rlmtl.
#   TORCH_WHEELS      folder in the context with wheels to install from (see docker/Dockerfile); PIP_NO_INDEX=1: offline.
#   TORCH_INDEX, TORCH_SPEC   where torch comes from and which (default: PyTorch's CPU index, torch==2.13.0).
#   COPPELIASIM_URL   the CoppeliaSim 4.1.0 Edu tarball (Ubuntu 20.04 build); COPPELIASIM_SHA256 checks it when set.
#   PYREP_COMMIT, RLBENCH_COMMIT   the pinned commits (version strings of both projects are frozen, so pin by commit).
# Run (the entrypoint starts Xvfb, then runs `rlmtl ARGS`; `rlbench-smoke` runs the smoke check):
#   docker run --rm rlmtl-rlbench rlbench-smoke
#   docker run --rm -v $PWD/data:/data rlmtl-rlbench collect /opt/rlmtl/configs/rlbench10.yaml data.cache_dir=/data
#   docker run --rm rlmtl-rlbench-test pytest -m rlbench -rs /opt/rlmtl/tests      (the integration tests)
ARG BASE_IMAGE=ubuntu:22.04

# ---- rlmtl-venv: /opt/rlmtl with rlmtl and its dependencies, from wheels only (no CoppeliaSim needed) ----------------
FROM ${BASE_IMAGE} AS rlmtl-venv
ARG TORCH_WHEELS=""
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_SPEC=torch==2.13.0
ARG PIP_NO_INDEX=""
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && python3 -m venv /opt/rlmtl \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
WORKDIR /src
RUN set -eu; \
    links=""; \
    if [ -n "$TORCH_WHEELS" ]; then links="--find-links /src/$TORCH_WHEELS"; fi; \
    if [ -n "$PIP_NO_INDEX" ]; then torch_source="--no-index"; else torch_source="--index-url $TORCH_INDEX"; fi; \
    /opt/rlmtl/bin/pip install --no-cache-dir --only-binary=:all: $links $torch_source "$TORCH_SPEC"; \
    /opt/rlmtl/bin/pip install --no-cache-dir --only-binary=:all: $links 'setuptools>=68' wheel; \
    /opt/rlmtl/bin/pip install --no-cache-dir --no-build-isolation --only-binary=:all: $links /src; \
    cd / && /opt/rlmtl/bin/python -c "import rlmtl; from rlmtl.envs import make_suite; print('rlmtl', rlmtl.__version__, make_suite('rlbench', 'rlbench10').task_names[0])"

# ---- coppeliasim: the simulator, unpacked to /opt/coppeliasim -----------------------------------------------------------
FROM ${BASE_IMAGE} AS coppeliasim
ARG COPPELIASIM_URL=https://downloads.coppeliarobotics.com/V4_1_0/CoppeliaSim_Edu_V4_1_0_Ubuntu20_04.tar.xz
ARG COPPELIASIM_SHA256=""
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl xz-utils \
 && rm -rf /var/lib/apt/lists/*
RUN set -eu; \
    curl -fsSL --retry 3 -o /tmp/coppeliasim.tar.xz "$COPPELIASIM_URL"; \
    if [ -n "$COPPELIASIM_SHA256" ]; then echo "$COPPELIASIM_SHA256  /tmp/coppeliasim.tar.xz" | sha256sum -c -; fi; \
    mkdir -p /opt/coppeliasim; \
    tar -xJf /tmp/coppeliasim.tar.xz -C /opt/coppeliasim --strip-components=1; \
    rm /tmp/coppeliasim.tar.xz; \
    test -f /opt/coppeliasim/libcoppeliaSim.so

# ---- rlbench-venv: PyRep (built against CoppeliaSim) and RLBench added to the venv by scripts/install_rlbench.sh -----
FROM rlmtl-venv AS rlbench-venv
ARG PYREP_COMMIT=8f420be8064b1970aae18a9cfbc978dfb15747ef
ARG RLBENCH_COMMIT=02720bba4c73fe02eb75df946b8791b806028a9d
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential git python3-dev libffi-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=coppeliasim /opt/coppeliasim /opt/coppeliasim
ENV COPPELIASIM_ROOT=/opt/coppeliasim \
    LD_LIBRARY_PATH=/opt/coppeliasim \
    QT_QPA_PLATFORM_PLUGIN_PATH=/opt/coppeliasim/platforms
# PyRep's setup.py builds its cffi bindings against $COPPELIASIM_ROOT and appends allowOldEduRelease=7501 to
# $COPPELIASIM_ROOT/system/usrset.txt (PyRep setup.py:24-35), which is why the simulator is copied on from here.
COPY scripts/install_rlbench.sh /src/scripts/install_rlbench.sh
RUN PYREP_COMMIT="$PYREP_COMMIT" RLBENCH_COMMIT="$RLBENCH_COMMIT" bash /src/scripts/install_rlbench.sh /opt/rlmtl/bin/python

# ---- runtime: runtime libraries for CoppeliaSim's Qt/OpenGL under Xvfb, the venv, the simulator, a non-root user -------
FROM ${BASE_IMAGE} AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 tini xvfb xauth libgl1 libglu1-mesa libgl1-mesa-dri libegl1 libglib2.0-0 libdbus-1-3 libfontconfig1 \
        libsm6 libxext6 libxrender1 libx11-xcb1 libxkbcommon-x11-0 libxcb-xinerama0 libxcb-icccm4 libxcb-image0 \
        libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && useradd --create-home --uid 1000 --shell /usr/sbin/nologin rlmtl
COPY --from=rlbench-venv /opt/rlmtl /opt/rlmtl
# CoppeliaSim writes into its own folder at run time (system/usrset.txt, settings): the runtime user owns it
COPY --from=rlbench-venv --chown=rlmtl:rlmtl /opt/coppeliasim /opt/coppeliasim
COPY configs /opt/rlmtl/configs
COPY docker/rlbench-entrypoint.sh /usr/local/bin/rlbench-entrypoint.sh
COPY scripts/rlbench_smoke.py /opt/rlmtl/scripts/rlbench_smoke.py
ENV PATH=/opt/rlmtl/bin:$PATH \
    COPPELIASIM_ROOT=/opt/coppeliasim \
    LD_LIBRARY_PATH=/opt/coppeliasim \
    QT_QPA_PLATFORM_PLUGIN_PATH=/opt/coppeliasim/platforms \
    QT_PLUGIN_PATH=/opt/coppeliasim \
    QT_QPA_PLATFORM=xcb \
    DISPLAY=:99 \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER rlmtl
WORKDIR /home/rlmtl
# tini -g: signals go to the whole process group, and orphaned CoppeliaSim processes are reaped
ENTRYPOINT ["tini", "-g", "--", "/usr/local/bin/rlbench-entrypoint.sh"]
CMD ["--help"]

# ---- test: the runtime image plus the dev extra and the tests (`pytest -m rlbench -rs /opt/rlmtl/tests`) ---------------
FROM runtime AS test
USER root
COPY tests /opt/rlmtl/tests
COPY pyproject.toml /opt/rlmtl/pyproject.toml
RUN /opt/rlmtl/bin/pip install --no-cache-dir "pytest>=7" "hypothesis>=6" \
 && chown -R rlmtl:rlmtl /opt/rlmtl/tests
USER rlmtl
WORKDIR /opt/rlmtl

# ---- the default target: the runtime image --------------------------------------------------------------------------
FROM runtime

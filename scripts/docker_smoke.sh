#!/usr/bin/env bash
# Build docker/Dockerfile and prove a headless evaluation works in the image, for real:
#   1. start a private Docker engine if none answers (overlay2, else vfs; no bridge network), make a local Debian
#      base image with debootstrap unless BASE_IMAGE names one, fill a wheelhouse so the build needs no package index;
#   2. build the image; every container runs with --network none, a read-only root filesystem (tmpfs /tmp) and a
#      non-root user, writing only to the mounted output folder;
#   3. in the container: check that isolation; collect 3 demos of 2 tasks and train a tiny policy; evaluate it on
#      2 tasks x 2 episodes with video; check eval.json and that the video frames are not blank;
#   4. check the exit codes: a broken checkpoint path -> 3, no output mount -> 4, success below --min-success -> 5;
#   5. remove everything it made (containers, images, base image, wheelhouse, temp folders, its Docker engine),
#      also when a step fails. If Docker cannot start it fails; it never skips.
# Env: BASE_IMAGE (an image to build from, e.g. debian:bookworm-slim; default: a debootstrapped one),
#      WHEELHOUSE (folder of wheels in the repository, default docker/wheels, filled if empty; `none`: the build
#      downloads from PyPI and PyTorch's CPU index), SMOKE_ARTIFACTS (copy eval.json, videos and junit.xml here),
#      DOCKERD_STORAGE_DRIVER (drivers to try, in order, for an engine this script starts; default "overlay2 vfs"),
#      SMOKE_IMAGE (an image already built from docker/Dockerfile, e.g. by the workflow's BuildKit step with its
#      layer cache: test that one instead of building; the layer check, which needs a build, is skipped).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

TASKS=reach-v3,pick-place-v3
EPISODES=2
tag="smoke-$$"
image="rlmtl:$tag"
base_image=""          # set when this script makes the base image (then it removes it)
wheelhouse_made=""     # set when this script fills the wheelhouse (then it removes it)
dockerd_pid=""
work=$(mktemp -d "${TMPDIR:-/tmp}/rlmtl-smoke.XXXXXX")
out="$work/out"

say() { echo "docker_smoke: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    if [ -n "${DOCKER_HOST:-}" ] || [ -S /var/run/docker.sock ]; then
        mapfile -t leftover < <(docker ps -aq --filter "label=rlmtl.smoke=$tag" 2>/dev/null)
        [ ${#leftover[@]} -eq 0 ] || docker rm -f "${leftover[@]}" >/dev/null 2>&1
        # The build stage is tagged too, so that removing the tags removes every layer this script built.
        [ -n "${SMOKE_IMAGE:-}" ] || docker image rm -f "$image" "$image-build" "$image-changed" >/dev/null 2>&1
        [ -z "$base_image" ] || docker image rm -f "$base_image" >/dev/null 2>&1
    fi
    stop_dockerd
    if [ -n "${SMOKE_ARTIFACTS:-}" ]; then  # also after a failure: whatever the evaluation and the build left
        mkdir -p "$SMOKE_ARTIFACTS"
        [ ! -d "$out/eval" ] || cp -r "$out/eval/." "$SMOKE_ARTIFACTS/"
        cp "$work"/*.log "$SMOKE_ARTIFACTS/" 2>/dev/null
        say "artifacts in $SMOKE_ARTIFACTS"
    fi
    [ -z "$wheelhouse_made" ] || rm -rf "$wheelhouse_made"
    rm -rf "$work"
    [ "$status" = 0 ] || say "exit $status (cleaned up)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need_root_tool() {  # need_root_tool COMMAND PACKAGE: install PACKAGE with apt-get when COMMAND is missing
    command -v "$1" >/dev/null && return
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "$1 not found and cannot install $2 (needs root and apt-get)"
    say "installing $2"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null; } \
        || die "apt-get install $2 failed"
}

launch_dockerd() {  # launch_dockerd DRIVER: a private engine (own socket, data and state folders); 0 once it answers
    rm -rf "$work/docker" && mkdir -p "$work/docker/data" "$work/docker/exec"
    dockerd --storage-driver="$1" --bridge=none --iptables=false \
        --host "unix://$work/docker/docker.sock" --data-root "$work/docker/data" --exec-root "$work/docker/exec" \
        --pidfile "$work/docker/docker.pid" >"$work/dockerd-$1.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 90); do
        docker info >/dev/null 2>&1 && return 0
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 1
    done
    stop_dockerd
    return 1
}

stop_dockerd() {
    [ -n "$dockerd_pid" ] || return 0
    kill "$dockerd_pid" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$dockerd_pid" 2>/dev/null
    wait "$dockerd_pid" 2>/dev/null
    dockerd_pid=""
    # dockerd leaves its network namespace (and, if killed, layer mounts) mounted under the exec/data folders.
    awk -v root="$work/" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n 1 umount -l 2>/dev/null
}

start_docker() {
    if docker info >/dev/null 2>&1; then
        say "using the running Docker engine ($(docker info -f '{{.ServerVersion}}, {{.Driver}}'))"
        return
    fi
    need_root_tool dockerd docker.io
    need_root_tool docker docker.io
    [ "$(id -u)" = 0 ] || die "no Docker engine answers and starting one needs root"
    export DOCKER_HOST="unix://$work/docker/docker.sock"
    # overlay2 shares image layers between containers; vfs (a full copy per layer and per container, slow but
    # needing nothing from the kernel) is the fallback.
    local driver
    for driver in ${DOCKERD_STORAGE_DRIVER:-overlay2 vfs}; do
        if launch_dockerd "$driver"; then
            say "started a Docker engine ($(docker info -f '{{.ServerVersion}}, {{.Driver}}'))"
            return
        fi
        say "dockerd with the $driver storage driver did not start:"
        tail -n 15 "$work/dockerd-$driver.log" >&2
    done
    die "the Docker engine did not start (dockerd logs above); this smoke needs Docker and does not skip"
}

make_base_image() {
    if [ -n "${BASE_IMAGE:-}" ]; then
        say "base image $BASE_IMAGE"
        return
    fi
    need_root_tool debootstrap debootstrap
    base_image="rlmtl-base:$tag"
    BASE_IMAGE=$base_image
    bash scripts/docker_base_image.sh "$base_image" >&2 || die "could not make a base image with debootstrap"
}

fill_wheelhouse() {
    WHEELHOUSE=${WHEELHOUSE:-docker/wheels}
    [ "$WHEELHOUSE" = none ] && return
    if ! compgen -G "$WHEELHOUSE/torch-*.whl" >/dev/null; then
        [ -e "$WHEELHOUSE" ] || wheelhouse_made="$repo/$WHEELHOUSE"
        bash scripts/docker_wheelhouse.sh "$WHEELHOUSE" >&2 || die "could not fill the wheelhouse $WHEELHOUSE"
    fi
}

build_image() {
    local args=(--network host -f docker/Dockerfile --build-arg "BASE_IMAGE=$BASE_IMAGE")
    [ "$WHEELHOUSE" = none ] || args+=(--build-arg "TORCH_WHEELS=$WHEELHOUSE" --build-arg PIP_NO_INDEX=1)
    local start=$SECONDS
    # BuildKit where the buildx plugin is installed, the classic builder otherwise (the Dockerfile suits both). The
    # build stage is tagged too, so that removing the tags removes every layer this script built.
    if docker buildx version >/dev/null 2>&1; then
        builder=(docker buildx build --load)
    else
        builder=(env DOCKER_BUILDKIT=0 docker build)
    fi
    { "${builder[@]}" "${args[@]}" --target build -t "$image-build" . &&
        "${builder[@]}" "${args[@]}" -t "$image" .; } >"$work/build.log" 2>&1 ||
        { tail -n 40 "$work/build.log" >&2; die "docker build failed (log above)"; }
    build_seconds=$((SECONDS - start))
    image_mb=$(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f", $1 / 1e6}')
    say "built $image with ${builder[*]:0:3} in $build_seconds s, $image_mb MB"
    check_layers "${args[@]}"
}

check_layers() {  # check_layers BUILD_ARGS...: a source change rebuilds rlmtl's small layers only, not the dependencies
    local context="$work/context" start=$SECONDS
    mkdir -p "$context/docker"
    cp -r pyproject.toml README.md rlmtl envs agents configs "$context/"
    [ ! -d docker/wheels ] || cp -al "$repo/docker/wheels" "$context/docker/wheels"
    cp .dockerignore "$context/" && cp docker/Dockerfile "$context/docker/"
    echo "# a source change (docker_smoke.sh layer check)" >>"$context/rlmtl/__init__.py"
    (cd "$context" && "${builder[@]}" "$@" -t "$image-changed" .) >"$work/rebuild.log" 2>&1 ||
        { tail -n 40 "$work/rebuild.log" >&2; die "rebuilding after a source change failed (log above)"; }
    local deps_layers changed_layers
    deps_layers=$(docker image inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$image")
    changed_layers=$(docker image inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$image-changed")
    local shared
    shared=$(comm -12 <(sort <<<"$deps_layers") <(sort <<<"$changed_layers") | grep -c . || true)
    local total
    total=$(grep -c . <<<"$deps_layers")
    docker image rm -f "$image-changed" >/dev/null 2>&1
    # runtime's layers and deps' environment must be shared; only rlmtl's wheel, its install and the configs differ
    [ $((total - shared)) -le 3 ] || die "a source change rebuilt $((total - shared)) of $total layers (the dependencies' included?)"
    say "a source change rebuilt $((total - shared)) of $total layers in $((SECONDS - start)) s"
}

# Containers: no network, read-only root, tmpfs /tmp, the image's non-root user (the caller's uid when not root, so
# the caller can read what the container writes), labelled for cleanup.
container() {
    local user=()
    [ "$(id -u)" = 0 ] || user=(--user "$(id -u):$(id -g)")
    docker run --rm --label "rlmtl.smoke=$tag" --network none --read-only --tmpfs /tmp "${user[@]}" "$@"
}

expect_exit() {  # expect_exit CODE WHAT DOCKER_RUN_ARGS...: the run must exit CODE with an rlmtl error line
    local want=$1 what=$2 got=0
    shift 2
    container "$@" >"$work/stdout" 2>"$work/stderr" || got=$?
    local message
    message=$(grep -m 1 '^rlmtl [a-z-]*: error: ' "$work/stderr" || true)
    [ "$got" = "$want" ] || { cat "$work/stderr" >&2; die "$what: exit $got, expected $want"; }
    [ -n "$message" ] || { cat "$work/stderr" >&2; die "$what: exit $want but no 'rlmtl ...: error:' message"; }
    say "$what -> exit $got: $message"
}

smoke() {
    mkdir -p "$out/eval" "$out/gate"
    if [ "$(id -u)" = 0 ]; then
        chown -R "$(container --entrypoint id "$image" -u)" "$out"
    fi
    local check=(-v "$repo/scripts/docker_smoke_check.py:/smoke/check.py:ro" --entrypoint python "$image" /smoke/check.py)
    container -v "$out:/out" "${check[@]}" isolation /out >&2 || die "isolation check"

    local config=/opt/rlmtl/configs/mt10.yaml
    local overrides=(name=smoke out_dir=/out/runs data.cache_dir=/out/data "env.tasks=[${TASKS}]" data.demos_per_task=3
        agent.hidden_dim=64 train.steps=200 train.batch_per_task=16 train.warmup_steps=10 train.log_every=50
        train.checkpoint_every=200 eval.video_episodes="$EPISODES")
    container -v "$out:/out" "$image" collect "$config" "${overrides[@]}" --no-progress >&2 || die "rlmtl collect in the container"
    container -v "$out:/out" "$image" train "$config" "${overrides[@]}" --no-progress >&2 || die "rlmtl train in the container"

    container -v "$out:/out" "$image" eval /out/runs/smoke --episodes "$EPISODES" --video --out /out/eval --no-progress \
        --min-success 0 --junit /out/eval/junit.xml >&2 || die "rlmtl eval --video in the container"
    container -v "$out:/out" "${check[@]}" outputs /out/eval "$TASKS" "$EPISODES" >&2 || die "eval outputs check"

    expect_exit 3 "broken checkpoint path" -v "$out:/out" "$image" eval /out/runs/smoke/checkpoints/step_99999999.pt --out /out/gate --no-progress
    expect_exit 4 "no output mount" -v "$out/runs/smoke:/checkpoint:ro" "$image" eval /checkpoint --episodes 1 --out /out --no-progress
    # pick-place-v3 is far beyond a 200-step policy from 3 demos, so a mean success of 1.0 is out of reach.
    expect_exit 5 "success below --min-success 1.0" -v "$out:/out" "$image" eval /out/runs/smoke --episodes 1 --out /out/gate \
        --no-progress --min-success 1.0
    grep -q "below --min-success 1" "$work/stderr" || die "the below-bar message does not name the bar"
}

phase_start=$SECONDS
start_docker
if [ -n "${SMOKE_IMAGE:-}" ]; then
    image=$SMOKE_IMAGE
    docker image inspect "$image" >/dev/null 2>&1 || die "SMOKE_IMAGE=$image: no such image"
    prepare_seconds=$((SECONDS - phase_start)) build_seconds=0
    image_mb=$(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f", $1 / 1e6}')
else
    make_base_image
    fill_wheelhouse
    prepare_seconds=$((SECONDS - phase_start))
    build_image
fi
smoke_start=$SECONDS
smoke
say "passed: engine + base image + wheelhouse $prepare_seconds s, build $build_seconds s, image $image_mb MB, containers $((SECONDS - smoke_start)) s"

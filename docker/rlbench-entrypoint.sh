#!/bin/sh
# Start a virtual X display for CoppeliaSim (GLX and RENDER on, as RLBench's maintainers recommend), wait for it,
# then run `rlmtl ARGS`. `rlbench-smoke` runs the smoke check; `sh`, `bash`, `python`, `pytest` run as given.
set -eu
display_number="${DISPLAY#:}"
display_number="${display_number%%.*}"
socket="/tmp/.X11-unix/X${display_number}"
if [ ! -e "$socket" ]; then
    Xvfb ":${display_number}" -screen 0 1280x1024x24 +extension GLX +render -noreset >/tmp/xvfb.log 2>&1 &
    waited=0
    while [ ! -e "$socket" ]; do
        if [ "$waited" -ge 100 ]; then
            echo "rlbench-entrypoint: Xvfb did not start on :${display_number} within 10 s:" >&2
            cat /tmp/xvfb.log >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
fi
case "${1:-}" in
    rlbench-smoke) shift; exec python /opt/rlmtl/scripts/rlbench_smoke.py "$@" ;;
    sh|bash|python|python3|pytest) exec "$@" ;;
    *) exec rlmtl "$@" ;;
esac

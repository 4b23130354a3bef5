#!/usr/bin/env bash
# Make a local Debian base image for docker/Dockerfile on a machine that cannot reach an image registry:
# debootstrap a minimal bookworm root filesystem and `docker import` it under the given tag.
# Usage: scripts/docker_base_image.sh TAG [SUITE] [MIRROR]   (needs root, debootstrap and a running Docker engine)
set -euo pipefail

tag=${1:?usage: docker_base_image.sh TAG [SUITE] [MIRROR]}
suite=${2:-bookworm}
mirror=${3:-http://deb.debian.org/debian}

command -v debootstrap >/dev/null || { echo "docker_base_image: debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "docker_base_image: debootstrap needs root" >&2; exit 1; }

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/rlmtl-rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT

# minbase: essential packages plus apt; enough for the Dockerfile to apt-get the rest.
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"
    echo "docker_base_image: debootstrap $suite from $mirror failed" >&2; exit 1
}
rm -f "$rootfs.log"
# Same trimming as the official slim images: no apt lists or package caches in the base layer.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
tar -C "$rootfs" -c . | docker import - "$tag" >/dev/null
echo "docker_base_image: $tag ($suite, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"

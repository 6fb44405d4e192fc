#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim where no registry can be pulled from; idempotent.
#   bash .ci/build_base_image.sh [IMAGE]    # default IMAGE: mlops-sandbox-base/python:3.11-bookworm
# Debian bookworm (whose python3 is 3.11) with venv and pip, from debootstrap, loaded with `docker import`.
# Needs root, debootstrap and a Debian mirror (DEBIAN_MIRROR). Skips the build when IMAGE exists.
set -euo pipefail

IMAGE=${1:-mlops-sandbox-base/python:3.11-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DOCKER=${DOCKER:-/usr/bin/docker}

if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE exists" >&2
  exit 0
fi

rootfs=$(mktemp -d /var/tmp/base-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm into $rootfs" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
# What the slim image leaves out too: package caches and lists, docs, man pages.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
tar -C "$rootfs" -c . | "$DOCKER" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  - "$IMAGE" >/dev/null
echo "built $IMAGE" >&2

#!/usr/bin/env bash
# Make a Docker engine usable on this machine, for the compose smoke test; idempotent.
#   bash infra/docker/ensure_dockerd.sh
# As root and when missing: installs docker.io and debootstrap from Debian, then starts dockerd in the
# background (there is no systemd here) and waits until `docker info` answers. Prints the client path.
set -euo pipefail

# /usr/bin/docker is Debian's client; another `docker` earlier in PATH may not build images.
DOCKER=/usr/bin/docker
LOG=${DOCKERD_LOG:-/var/log/dockerd-smoke.log}
WAIT_SECONDS=${DOCKERD_WAIT_SECONDS:-60}

if [ ! -x "$DOCKER" ] || ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: docker.io and debootstrap are missing; install them as root (apt-get install docker.io debootstrap)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi

if ! "$DOCKER" info >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: the Docker engine is not running and only root can start it here" >&2
    exit 1
  fi
  if ! pgrep -x dockerd >/dev/null; then
    echo "starting dockerd (log: $LOG)" >&2
    # setsid: the engine outlives this script and the test process that called it.
    setsid dockerd >"$LOG" 2>&1 </dev/null &
  fi
  deadline=$((SECONDS + WAIT_SECONDS))
  until "$DOCKER" info >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "error: dockerd did not answer within ${WAIT_SECONDS} s; its log ends with:" >&2
      tail -n 20 "$LOG" >&2 || true
      exit 1
    fi
    sleep 1
  done
fi
echo "$DOCKER"

#!/usr/bin/env bash
# Create or update the project's virtual environments (idempotent, fast when up to date): .venv, and the
# tracking server's .venv-tracking, which runs a newer MLflow than training and serving (pyproject.toml, the
# `tracking` extra).
# Python 3.11 or 3.12 is required (MLServer 1.7.1 does not support 3.13); 3.11 is preferred.
# It installs exactly what the lock pins (infra/images/requirements/dev*.txt, exported from uv.lock), then the
# project itself in editable mode, without dependencies. pip runs doubly quiet (only errors reach the terminal)
# and leaves byte-compiling to compileall on every core: 78 s + 25 s instead of pip's 123 s (measured here, 2
# cores). Not compiling at all would move that cost to the first start of every service. Each environment says
# when it is ready, and after how long.
#
# torch comes from SANDBOX_TORCH_INDEX_URL, PyTorch's CPU wheels by default. Where that
# index cannot be reached, or with SANDBOX_TORCH_INDEX_URL set empty, it comes from PyPI, whose Linux build
# carries NVIDIA's CUDA libraries (several GB more).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_INDEX=${SANDBOX_TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  echo "error: no Python 3.11 or 3.12 found; install one or set PYTHON=/path/to/python3.11" >&2
  exit 1
}

reachable() {  # reachable URL: the index answers within 10 s
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)' "$1" >/dev/null 2>&1
}

if [ ! -x .venv/bin/python ]; then
  "$(pick_python)" -m venv .venv
  .venv/bin/python -m pip install --quiet --quiet --upgrade pip
fi
REQUIREMENTS=infra/images/requirements
stamp_of() {  # stamp_of VARIANT: the file that says .venv holds exactly this lock, with cpu or cuda torch
  local locked=$REQUIREMENTS/dev.txt
  [ "$1" = cpu ] && locked=$REQUIREMENTS/dev-cpu.txt
  echo ".venv/.installed-$(cat pyproject.toml "$locked" | sha256sum | cut -c1-16)-$1"
}

install_main() {  # the locked dev dependencies, then the project in editable mode
  local began=$SECONDS
  if [ -n "$TORCH_INDEX" ] && reachable "$TORCH_INDEX/torch/"; then
    variant=cpu
    echo "installing the locked dependencies into .venv, torch from $TORCH_INDEX (a few minutes)"
    .venv/bin/python -m pip install --quiet --quiet --no-compile --extra-index-url "$TORCH_INDEX" -r "$REQUIREMENTS/dev-cpu.txt"
  else
    variant=cuda
    [ -n "$TORCH_INDEX" ] && echo "note: $TORCH_INDEX cannot be reached: torch comes from PyPI, with its CUDA libraries (several GB more)"
    echo "installing the locked dependencies into .venv (torch is several GB: a few minutes)"
    .venv/bin/python -m pip install --quiet --quiet --no-compile -r "$REQUIREMENTS/dev.txt"
  fi
  .venv/bin/python -m pip install --quiet --quiet --no-deps -e .
  # A module that does not compile (some packages ship such test files) only stays uncompiled: not an error.
  .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
  rm -f .venv/.installed-*
  touch "$(stamp_of "$variant")"
  echo ".venv is ready ($((SECONDS - began)) s)"
}

# The tracking server's environment: the locked `tracking` extra, then the project in editable mode without
# dependencies, which also registers its S3 artifact store with this MLflow (the entry point in pyproject.toml).
# No torch: 43 s the first time with pip's cache warm, 0.1 s when up to date (measured here, 2 cores).
install_tracking() {
  local stamp
  stamp=".venv-tracking/.installed-$(cat pyproject.toml "$REQUIREMENTS/tracking.txt" | sha256sum | cut -c1-16)"
  [ -e "$stamp" ] && return
  local began=$SECONDS
  if [ ! -x .venv-tracking/bin/python ]; then
    "$(pick_python)" -m venv .venv-tracking
    .venv-tracking/bin/python -m pip install --quiet --quiet --upgrade pip
  fi
  echo "installing the tracking server's locked dependencies into .venv-tracking"
  .venv-tracking/bin/python -m pip install --quiet --quiet --no-compile -r "$REQUIREMENTS/tracking.txt"
  .venv-tracking/bin/python -m pip install --quiet --quiet --no-deps -e .
  .venv-tracking/bin/python -m compileall -q -j 0 \
    "$(.venv-tracking/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
  rm -f .venv-tracking/.installed-*
  touch "$stamp"
  echo ".venv-tracking is ready ($((SECONDS - began)) s)"
}

# The two environments install side by side: pip installs with one core, and on a fresh machine the tracking
# server's then takes no time of its own (sequentially, it came after .venv's 3 minutes: 66 s more).
# Up to date with either variant: nothing to do (and no index to ask).
pids=()
if [ ! -e "$(stamp_of cpu)" ] && [ ! -e "$(stamp_of cuda)" ]; then
  install_main &
  pids+=($!)
fi
install_tracking &
pids+=($!)
# Both run to their end; then the first failure is this script's.
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=$?
done
exit "$failed"

#!/usr/bin/env bash
# Create or update the project's virtual environment in .venv (idempotent, fast when up to date).
# Python 3.11 or 3.12 is required (MLServer 1.7.1 does not support 3.13); 3.11 is preferred.
# It installs exactly what the lock pins (infra/images/requirements/dev.txt, exported from uv.lock), then the
# project itself in editable mode, without dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCKED=infra/images/requirements/dev.txt

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

if [ ! -x .venv/bin/python ]; then
  "$(pick_python)" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
# Reinstall only when the dependencies changed.
stamp=.venv/.installed-$(cat pyproject.toml "$LOCKED" | sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
  echo "installing the locked dependencies into .venv (torch is several GB: a few minutes)"
  .venv/bin/python -m pip install --quiet -r "$LOCKED"
  .venv/bin/python -m pip install --quiet --no-deps -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi

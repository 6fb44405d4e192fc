#!/usr/bin/env bash
# Create or update the project's virtual environment in .venv (idempotent, fast when up to date).
# Python 3.10-3.12 is required (MLServer 1.7.1 does not support 3.13); 3.11 is preferred.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  echo "error: no Python 3.10-3.12 found; install one or set PYTHON=/path/to/python3.11" >&2
  exit 1
}

if [ ! -x .venv/bin/python ]; then
  "$(pick_python)" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
# Reinstall only when the dependency list changed.
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
  echo "installing the project and its pinned dependencies into .venv (torch is several GB: a few minutes)"
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

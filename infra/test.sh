#!/usr/bin/env bash
# The project's checks: lint, types, then every test (unit and end-to-end).
#   bash infra/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy .
.venv/bin/lint-imports --no-cache
# Two test processes (pytest-xdist), each running whole test modules, in the order tests/conftest.py gives them:
# a module's servers start once, and its tests keep their order. One process runs the compose smoke test once
# its images are built, the other the rest. `-n 0` runs everything in this one process.
exec .venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"

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
exec .venv/bin/python -m pytest "$@"

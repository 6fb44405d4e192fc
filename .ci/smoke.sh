#!/usr/bin/env bash
# The real compose smoke test: Docker engine, base image, wheelhouse, images, then the stack on SQLite and
# on PostgreSQL. Needs root on Debian when docker.io is not installed and running yet.
#   bash .ci/smoke.sh [pytest args]
# SMOKE_KEEP_IMAGES=1 keeps the built images for the next run (they are removed by default).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/bootstrap.sh
exec .venv/bin/python -m pytest -m docker tests/compose "$@"

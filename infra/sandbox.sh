#!/usr/bin/env bash
# The sandbox without Docker, end to end: S3 + MLflow, train, register, promote, serve, predict.
#   bash infra/sandbox.sh          # = up
#   bash infra/sandbox.sh down     # stop what up started; data stays in .sandbox
#   bash infra/sandbox.sh status
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/bootstrap.sh
exec .venv/bin/python -m infra.local.stack "${@:-up}"

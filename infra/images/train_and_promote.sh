#!/bin/sh
# The compose training job: train and register a new version, then promote it to production.
# With SANDBOX_TRAIN_ONLY_IF_MISSING=true it trains only when SANDBOX_MODEL_REF (default @production) does not
# resolve to a version yet, so `docker compose up` serves the existing model without retraining.
set -eu

if [ "${SANDBOX_TRAIN_ONLY_IF_MISSING:-false}" = true ]; then
  ref=${SANDBOX_MODEL_REF:-@production}
  if version=$(python -m infra.ops.registry resolve "$ref" 2>/dev/null); then
    echo "$ref is version $version: not retraining (SANDBOX_TRAIN_ONLY_IF_MISSING=true)"
    exit 0
  fi
fi

result=$(mktemp)
python -m training.train --output-json "$result"
version=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$result")
exec python -m infra.ops.registry promote "$version" --to production

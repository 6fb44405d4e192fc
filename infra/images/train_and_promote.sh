#!/bin/sh
# The compose training job, idempotent: when SANDBOX_MODEL_REF (default @production) already names a version,
# it exits at once, so that `docker compose up` never changes what serves. Otherwise (the first `up`) it
# trains and registers a new version and promotes it to production.
# Retraining is an explicit command: docker compose run --rm cli train --alias production
set -eu

ref=${SANDBOX_MODEL_REF:-@production}
if version=$(python -m infra.ops.registry resolve "$ref" 2>/dev/null); then
  echo "$ref is version $version: nothing to train (retrain with: docker compose run --rm cli train --alias production)"
  exit 0
fi
result=$(mktemp)
python -m training.train --output-json "$result"
version=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$result")
exec python -m infra.ops.registry promote "$version" --to production

#!/bin/sh
# The compose training job: train and register a new version, then promote it to production.
# With TRAIN_ONLY_IF_MISSING=true it trains only when SERVING_MODEL_REF (default @production) does not
# resolve to a version yet, so `docker compose up` serves the existing model without retraining.
set -eu

if [ "${TRAIN_ONLY_IF_MISSING:-false}" = true ]; then
  if python - <<'PY'
import sys

from services.serving.settings import ServingSettings
from training.registry import RegistryError, resolve_version
from training.tracking import connect

settings = ServingSettings()
try:
    version = resolve_version(connect(settings.tracking_uri), settings.model_name, settings.model_ref)
except RegistryError:
    sys.exit(1)
print(f"{settings.model_uri} is version {version}: not retraining (TRAIN_ONLY_IF_MISSING=true)")
PY
  then
    exit 0
  fi
fi

result=$(mktemp)
python -m training.train --output-json "$result"
version=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$result")
exec python -m training.registry_cli promote "$version" --to production

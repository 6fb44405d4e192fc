#!/usr/bin/env bash
# Fill infra/images/wheelhouse/ with every wheel the images need, for offline builds; idempotent.
#   bash infra/images/build_wheelhouse.sh
# Uses the project's venv pip (Python 3.11 on x86_64 Linux, like the images) and its configured indexes.
# Skips the download when the wheelhouse is complete for the current pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELHOUSE=infra/images/wheelhouse
PIP=${PIP:-.venv/bin/pip}

# Outside the wheelhouse (and the build context), so that it does not change the cached COPY layer.
stamp="infra/images/.wheelhouse-complete-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -e "$stamp" ]; then
  echo "$WHEELHOUSE is complete for this pyproject.toml" >&2
  exit 0
fi
echo "downloading the images' wheels into $WHEELHOUSE (torch is several GB)" >&2
# setuptools: the build backend of the project itself, which pip installs offline too.
"$PIP" download --quiet --disable-pip-version-check -d "$WHEELHOUSE" ".[local]" "setuptools>=68" wheel
rm -f infra/images/.wheelhouse-complete-*
touch "$stamp"

#!/usr/bin/env bash
# Fill a wheelhouse with every wheel the images install, for builds without an index; idempotent.
#   bash infra/images/build_wheelhouse.sh [DIR]     # default DIR: infra/images/wheelhouse
# Then serve it and point the builds at it (docs/operations.md, "Offline builds"):
#   python3 -m http.server --bind 127.0.0.1 3141 --directory infra/images/wheelhouse &
#   PIP_NO_INDEX=1 PIP_FIND_LINKS=http://127.0.0.1:3141/ (as build arguments, with the build on the host network)
# It downloads the locked requirements of each image (infra/images/requirements/*.txt) with the venv's pip
# (Python 3.11 on x86_64 Linux, like the images) and its configured indexes, plus what pip needs to build the
# project itself. Skips the download when the wheelhouse is complete for the current lock.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELHOUSE=${1:-infra/images/wheelhouse}
PIP=${PIP:-.venv/bin/pip}
REQUIREMENTS="infra/images/requirements/tracking.txt infra/images/requirements/s3.txt infra/images/requirements/router.txt infra/images/requirements/ml.txt"

mkdir -p "$WHEELHOUSE"
# shellcheck disable=SC2086  # one path per file
stamp="$WHEELHOUSE/.complete-$(cat $REQUIREMENTS pyproject.toml | sha256sum | cut -c1-16)"
if [ -e "$stamp" ]; then
  echo "$WHEELHOUSE is complete for this lock" >&2
  exit 0
fi
echo "downloading the images' wheels into $WHEELHOUSE (torch is several GB)" >&2
for requirements in $REQUIREMENTS; do
  "$PIP" download --quiet --disable-pip-version-check -d "$WHEELHOUSE" -r "$requirements"
done
# setuptools: the build backend of the project itself, which pip installs without an index too.
"$PIP" download --quiet --disable-pip-version-check -d "$WHEELHOUSE" "setuptools>=68" wheel
rm -f "$WHEELHOUSE"/.complete-*
touch "$stamp"

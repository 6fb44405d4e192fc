#!/usr/bin/env bash
# Lock the dependencies after editing pyproject.toml: uv.lock, then the requirements file of each install.
#   bash tools/lock.sh           # re-resolve (needs PyPI), then export
#   bash tools/lock.sh --check   # offline: exit 1 when uv.lock or an export is out of date
#
# uv.lock pins every package, transitive ones too, for every platform the project supports. The exports in
# infra/images/requirements/ are what pip installs: tracking.txt (mlflow image), s3.txt (s3 image), router.txt
# (router image), ml.txt (ml image), and dev.txt or dev-cpu.txt (the venv of bash infra/bootstrap.sh). ml.txt and dev-cpu.txt leave
# out the NVIDIA libraries that PyPI's Linux torch wheel needs: PyTorch's CPU wheels need none.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
OUT=infra/images/requirements

export_to() {  # export_to FILE [uv export options]: the requirements of one install, exactly as locked
  local file=$1
  shift
  "$UV" export --locked --offline --no-hashes --no-emit-project --no-header --quiet "$@" >"$file"
}

cuda_packages() {  # the lock's CUDA runtime packages, as --no-emit-package options
  grep -E '^name = "(nvidia-.*|cuda-.*|triton)"$' uv.lock | cut -d'"' -f2 | sed 's/^/--no-emit-package=/'
}

write_all() {  # write_all DIR
  mkdir -p "$1"
  export_to "$1/tracking.txt" --extra tracking
  export_to "$1/s3.txt" --extra s3
  export_to "$1/router.txt" --extra router
  # shellcheck disable=SC2046  # one option per package
  export_to "$1/ml.txt" --extra ml $(cuda_packages)
  export_to "$1/dev.txt" --extra dev
  # shellcheck disable=SC2046
  export_to "$1/dev-cpu.txt" --extra dev $(cuda_packages)
}

if [ "${1:-}" = --check ]; then
  fresh=$(mktemp -d)
  trap 'rm -rf "$fresh"' EXIT
  if ! write_all "$fresh" 2>"$fresh.err"; then
    echo "uv.lock does not match pyproject.toml: run bash tools/lock.sh" >&2
    cat "$fresh.err" >&2
    exit 1
  fi
  if ! diff -ru "$OUT" "$fresh" >&2; then
    echo "infra/images/requirements/ is out of date with uv.lock: run bash tools/lock.sh" >&2
    exit 1
  fi
  exit 0
fi
"$UV" lock "$@"
write_all "$OUT"
echo "locked: uv.lock and $OUT/{tracking,s3,router,ml,dev,dev-cpu}.txt" >&2

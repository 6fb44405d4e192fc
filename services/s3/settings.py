"""Settings of the S3 stand-in (`rclone serve s3`): where it listens, where buckets live, its credentials."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from mlops_sandbox.settings import PER_PROCESS, SandboxSettings


class S3ServerSettings(SandboxSettings):
    """An S3 server on local disk, standing in for MinIO in the local stack and where MinIO's image cannot run."""

    address: str = Field("127.0.0.1:9000", validation_alias="SANDBOX_S3_SERVER_ADDRESS", json_schema_extra=PER_PROCESS)
    """host:port of the S3 API."""
    directory: Path = Field(Path("s3-data"), validation_alias="SANDBOX_S3_SERVER_DIR", json_schema_extra=PER_PROCESS)
    """Where objects are kept: each top-level folder is a bucket."""
    access_key: SecretStr = Field(validation_alias="AWS_ACCESS_KEY_ID")
    """The access key clients sign with (the tracking server's AWS_ACCESS_KEY_ID)."""
    secret_key: SecretStr = Field(validation_alias="AWS_SECRET_ACCESS_KEY")
    """The secret key clients sign with."""

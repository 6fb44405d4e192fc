"""Settings of the MLflow tracking server, named as MLflow and boto3 name them."""

from __future__ import annotations

from urllib.parse import urlparse

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# MLflow >= 3.5 answers 403 "Invalid Host header" to any Host not listed, and setting the list replaces
# its defaults, so localhost and the compose service name are both listed (with any port).
DEFAULT_ALLOWED_HOSTS = "localhost,localhost:*,127.0.0.1,127.0.0.1:*,mlflow,mlflow:*"


class TrackingServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    backend_store_uri: str = Field("sqlite:///mlflow.db", validation_alias="MLFLOW_BACKEND_STORE_URI")
    """Runs and the registry: sqlite:///path or postgresql+psycopg2://user:pass@host:5432/db."""
    artifacts_destination: str = Field("./mlartifacts", validation_alias="MLFLOW_ARTIFACTS_DESTINATION")
    """Where the server stores artifacts it proxies: s3://bucket/ or a local folder."""
    host: str = Field("127.0.0.1", validation_alias="MLFLOW_HOST")
    port: int = Field(5000, ge=1, le=65535, validation_alias="MLFLOW_PORT")
    workers: int = Field(1, ge=1, le=32, validation_alias="MLFLOW_WORKERS")
    """One worker keeps the sandbox light; MLflow's default of 4 plus its job runner costs GBs of RSS."""
    allowed_hosts: str = Field(DEFAULT_ALLOWED_HOSTS, validation_alias="MLFLOW_ALLOWED_HOSTS")
    s3_endpoint_url: str | None = Field(None, validation_alias="MLFLOW_S3_ENDPOINT_URL")
    aws_access_key_id: SecretStr | None = Field(None, validation_alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(None, validation_alias="AWS_SECRET_ACCESS_KEY")
    dependency_wait_seconds: float = Field(60.0, gt=0, validation_alias="MLFLOW_DEPENDENCY_WAIT_SECONDS")
    """How long to wait for the database and the object store before giving up."""
    shutdown_grace_seconds: float = Field(10.0, gt=0, validation_alias="SHUTDOWN_GRACE_SECONDS")

    @property
    def s3_bucket(self) -> str | None:
        parsed = urlparse(self.artifacts_destination)
        return parsed.netloc if parsed.scheme == "s3" else None

    @model_validator(mode="after")
    def _check(self) -> TrackingServerSettings:
        if self.artifacts_destination.startswith("s3://"):
            if not self.s3_bucket:
                raise ValueError(f"MLFLOW_ARTIFACTS_DESTINATION has no bucket: {self.artifacts_destination!r}")
            if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
                raise ValueError("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither")
        if self.backend_store_uri.startswith("postgresql://"):
            raise ValueError(
                "MLFLOW_BACKEND_STORE_URI: use the postgresql+psycopg2:// scheme "
                "(a bare postgresql:// needs psycopg 3, which this stack does not install)"
            )
        return self

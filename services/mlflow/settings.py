"""Settings of the MLflow tracking server, named as MLflow and boto3 name them."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mlops_sandbox.settings import ArtifactStoreSettings

# MLflow >= 3.5 answers 403 "Invalid Host header" to any Host not listed, and setting the list replaces
# its defaults, so localhost and the compose service name are both listed (with any port).
DEFAULT_ALLOWED_HOSTS = "localhost,localhost:*,127.0.0.1,127.0.0.1:*,mlflow,mlflow:*"


class TrackingServerSettings(ArtifactStoreSettings):
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    backend_store_uri: str = Field("sqlite:///mlflow.db", validation_alias="MLFLOW_BACKEND_STORE_URI")
    """Runs and the registry: sqlite:///path or postgresql+psycopg2://user:pass@host:5432/db."""
    host: str = Field("127.0.0.1", validation_alias="MLFLOW_HOST")
    port: int = Field(5000, ge=1, le=65535, validation_alias="MLFLOW_PORT")
    workers: int = Field(1, ge=1, le=32, validation_alias="MLFLOW_WORKERS")
    """One worker keeps the sandbox light; MLflow's default of 4 plus its job runner costs GBs of RSS."""
    allowed_hosts: str = Field(DEFAULT_ALLOWED_HOSTS, validation_alias="MLFLOW_ALLOWED_HOSTS")
    shutdown_grace_seconds: float = Field(10.0, gt=0, validation_alias="SHUTDOWN_GRACE_SECONDS")

    @model_validator(mode="after")
    def _check(self) -> TrackingServerSettings:
        if self.backend_store_uri.startswith("postgresql://"):
            raise ValueError(
                "MLFLOW_BACKEND_STORE_URI: use the postgresql+psycopg2:// scheme "
                "(a bare postgresql:// needs psycopg 3, which this stack does not install)"
            )
        return self

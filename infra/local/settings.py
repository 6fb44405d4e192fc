"""Settings of the local (no-Docker) stack: where its state lives and which ports it uses.

The services themselves read their usual variables (MLFLOW_*, MLSERVER_*, AWS_*, MODEL_NAME, ...); the
stack only sets the ones it must (addresses between services, paths in its data folder) and passes
everything else through from the environment, so a setting means the same here as in compose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LocalStackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    sandbox_dir: Path = Field(Path(".sandbox"), validation_alias="SANDBOX_DIR")
    """All state: the SQLite store, objects, logs and PID files."""
    artifact_store: Literal["s3", "local"] = Field("s3", validation_alias="SANDBOX_ARTIFACT_STORE")
    """s3: an rclone S3 server, as MinIO in compose; local: a folder under SANDBOX_DIR."""
    s3_port: int = Field(9000, ge=1, le=65535, validation_alias="S3_PORT")
    s3_bucket: str = Field("mlflow", pattern=r"^[a-z0-9][a-z0-9.\-]{2,62}$", validation_alias="S3_BUCKET")
    mlflow_port: int = Field(5000, ge=1, le=65535, validation_alias="MLFLOW_PORT")
    backend_store_uri: str | None = Field(None, validation_alias="MLFLOW_BACKEND_STORE_URI")
    """Unset: SQLite in SANDBOX_DIR."""
    http_port: int = Field(8080, ge=1, le=65535, validation_alias="MLSERVER_HTTP_PORT")
    staging_http_port: int = Field(8090, ge=1, le=65535, validation_alias="STAGING_HTTP_PORT")
    """The staging endpoint (@staging) runs next to production on these ports."""
    staging_grpc_port: int = Field(8091, ge=1, le=65535, validation_alias="STAGING_GRPC_PORT")
    staging_metrics_port: int = Field(8092, ge=1, le=65535, validation_alias="STAGING_METRICS_PORT")
    model_name: str = Field("pytorch_simplenn_mnist", validation_alias="MODEL_NAME")
    predict_images: int = Field(10_000, ge=1, le=10_000, validation_alias="SANDBOX_PREDICT_IMAGES")
    min_accuracy: float = Field(0.975, ge=0, le=1, validation_alias="SANDBOX_MIN_ACCURACY")
    start_timeout: float = Field(180.0, gt=0, validation_alias="SANDBOX_START_TIMEOUT")
    """How long each service may take to become healthy."""

    @property
    def root(self) -> Path:
        return self.sandbox_dir.resolve()

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def serving_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def staging_url(self) -> str:
        return f"http://127.0.0.1:{self.staging_http_port}"

"""Settings that more than one process reads: where the registry is, which model, where MNIST is, the endpoints."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlops_sandbox.registry import MODEL_NAME_PATTERN


class RegistrySettings(BaseSettings):
    """What every client of the registry needs: where it is, and which model."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", populate_by_name=True)

    tracking_uri: str = Field("sqlite:///mlflow.db", validation_alias="MLFLOW_TRACKING_URI")
    """Where runs and registered models go: a tracking-server URL or a `sqlite:///` URI."""
    tracking_wait_seconds: float = Field(120.0, gt=0, validation_alias="MLFLOW_WAIT_SECONDS")
    """How long to wait for a tracking server to answer before giving up."""
    model_name: str = Field("pytorch_simplenn_mnist", pattern=MODEL_NAME_PATTERN, validation_alias="MODEL_NAME")


class MnistSettings(RegistrySettings):
    mnist_root: Path = Field(Path("data/mnist"), validation_alias="MNIST_ROOT")
    """A torchvision root holding MNIST/raw/*-ubyte, relative to the current folder; downloaded there when online."""
    mnist_download: bool = Field(True, validation_alias="MNIST_DOWNLOAD")
    """Download MNIST into the root when its files are missing."""


class EndpointSettings(MnistSettings):
    """The two serving endpoints that a gated promotion and a rehearsal measure versions through."""

    serving_url: str = Field("http://127.0.0.1:8080", validation_alias="SERVING_URL")
    """Production: serves @production."""
    staging_url: str = Field("http://127.0.0.1:8090", validation_alias="SERVING_STAGING_URL")
    """Staging: serves @staging."""


class ArtifactStoreSettings(BaseSettings):
    """Where the tracking server keeps the artifacts it proxies, and how it reaches that store.

    Read by the tracking server and the create-bucket job; clients of the server need none of it.
    """

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    artifacts_destination: str = Field("./mlartifacts", validation_alias="MLFLOW_ARTIFACTS_DESTINATION")
    """Where the server stores artifacts it proxies: s3://bucket/ or a local folder."""
    s3_endpoint_url: str | None = Field(None, validation_alias="MLFLOW_S3_ENDPOINT_URL")
    aws_access_key_id: SecretStr | None = Field(None, validation_alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(None, validation_alias="AWS_SECRET_ACCESS_KEY")
    dependency_wait_seconds: float = Field(60.0, gt=0, validation_alias="MLFLOW_DEPENDENCY_WAIT_SECONDS")
    """How long to wait for the database and the object store before giving up."""

    @property
    def s3_bucket(self) -> str | None:
        parsed = urlparse(self.artifacts_destination)
        return parsed.netloc if parsed.scheme == "s3" else None

    @model_validator(mode="after")
    def _check_s3(self) -> ArtifactStoreSettings:
        if self.artifacts_destination.startswith("s3://"):
            if not self.s3_bucket:
                raise ValueError(f"MLFLOW_ARTIFACTS_DESTINATION has no bucket: {self.artifacts_destination!r}")
            if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
                raise ValueError("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither")
        return self

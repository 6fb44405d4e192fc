"""Settings of the MLflow tracking server: MLflow's and boto3's own variables, plus the project's waits."""

from __future__ import annotations

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, model_validator

from mlops_sandbox.settings import (
    IN_ENV_EXAMPLE,
    PER_PROCESS,
    PLACEHOLDER,
    ArtifactStoreSettings,
    AuthSettings,
    composed,
)

# MLflow >= 3.5 answers 403 "Invalid Host header" to any Host not listed, and setting the list replaces
# its defaults, so localhost and the compose service name are both listed (with any port).
GENERATE_FERNET_KEY = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
"""The command that prints a new MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY."""
DEFAULT_ALLOWED_HOSTS = "localhost,localhost:*,127.0.0.1,127.0.0.1:*,mlflow,mlflow:*"


class TrackingServerSettings(ArtifactStoreSettings):
    """The tracking server and Model Registry (`mlflow server --serve-artifacts`), and its backend store."""

    backend_store_uri: SecretStr = Field(
        SecretStr("sqlite:///mlflow.db"),
        validation_alias="MLFLOW_BACKEND_STORE_URI",
        examples=[""],
        json_schema_extra={
            **IN_ENV_EXAMPLE,
            "example_comment": "postgresql+psycopg2://${POSTGRES_USER:-mlflow}:${POSTGRES_PASSWORD}@postgres:5432/${POSTGRES_DB:-mlflow}",
        },
    )
    """Runs and the registry: sqlite:///PATH, or postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB. Unset: SQLite
    (compose: the mlflow-db volume; local stack: .sandbox/mlflow.db). For the compose postgres profile, set
    COMPOSE_PROFILES=postgres and uncomment the line below (compose fills in the variables)."""
    host: str = Field("127.0.0.1", validation_alias="MLFLOW_HOST", json_schema_extra=PER_PROCESS)
    """The address the server binds."""
    port: int = Field(5000, ge=1, le=65535, validation_alias="MLFLOW_PORT", json_schema_extra=PER_PROCESS)
    """The port the server listens on."""
    workers: int = Field(1, ge=1, le=32, validation_alias="MLFLOW_WORKERS")
    """Server worker processes. One keeps the sandbox light; MLflow's default of 4 costs GBs of memory."""
    allowed_hosts: str = Field(DEFAULT_ALLOWED_HOSTS, validation_alias="MLFLOW_SERVER_ALLOWED_HOSTS")
    """Host headers the server accepts: MLflow >= 3.5 answers 403 "Invalid Host header" to any other, and this
    list replaces MLflow's defaults, so it names both the compose service and localhost."""
    shutdown_grace_seconds: float = Field(10.0, gt=0, validation_alias="SANDBOX_SHUTDOWN_GRACE_SECONDS")
    """How long a service may take to stop before its process group is killed (seconds)."""
    webhook_secret_encryption_key: SecretStr | None = Field(
        None,
        validation_alias="MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
        examples=[f"{PLACEHOLDER}-fernet-key"],
        json_schema_extra=IN_ENV_EXAMPLE,
    )
    """The Fernet key with which MLflow encrypts webhook secrets in the backend store. Generate one:
    python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())". Unset, MLflow
    makes a new one at every start and cannot read the webhooks registered before (the local stack keeps one
    in SANDBOX_DIR)."""
    webhook_allowed_schemes: str = Field("http,https", validation_alias="MLFLOW_WEBHOOK_ALLOWED_SCHEMES")
    """URL schemes a webhook may use. MLflow allows https only; the sandbox's endpoints speak http inside its
    own network (loopback, or compose's)."""
    webhook_allow_private_ips: bool = Field(True, validation_alias="MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS")
    """Let webhooks target loopback and private addresses, where the sandbox's endpoints are. MLflow refuses
    them by default against SSRF; turn it off when untrusted users can create webhooks on your server."""
    webhook_cache_ttl: int = Field(1, ge=0, le=3600, validation_alias="MLFLOW_WEBHOOK_CACHE_TTL")
    """Seconds MLflow keeps its list of webhooks per event. MLflow's 60 left a webhook registered just after
    an event deaf for up to a minute; an alias event costs one indexed query more at 1."""

    auth: AuthSettings = composed(AuthSettings, "SANDBOX_AUTH_SETTINGS")

    @model_validator(mode="after")
    def _check_auth(self) -> TrackingServerSettings:
        """The server needs every secret of the auth app, not only the admin's (which AuthSettings requires)."""
        if self.auth.enabled:
            self.auth.require("serving_password")
            self.auth.require("flask_secret_key")
        return self

    @model_validator(mode="after")
    def _check_fernet_key(self) -> TrackingServerSettings:
        key = self.webhook_secret_encryption_key
        if key is None:
            return self
        try:
            Fernet(key.get_secret_value())
        except ValueError:
            raise ValueError(
                "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY is not a Fernet key (32 url-safe base64-encoded bytes); "
                f"generate one: {GENERATE_FERNET_KEY}"
            ) from None
        return self

    @model_validator(mode="after")
    def _check_scheme(self) -> TrackingServerSettings:
        if self.backend_store_uri.get_secret_value().startswith("postgresql://"):
            raise ValueError(
                "MLFLOW_BACKEND_STORE_URI: use the postgresql+psycopg2:// scheme "
                "(a bare postgresql:// needs psycopg 3, which this stack does not install)"
            )
        return self

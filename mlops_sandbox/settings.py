"""The settings that more than one process reads, and the rules every settings class of the project follows.

Names: a variable that a library reads keeps that library's name (`MLFLOW_TRACKING_URI`, `AWS_ACCESS_KEY_ID`,
`MLSERVER_HTTP_PORT`); a variable this project invents starts with `SANDBOX_`. Every class is documented in
docs/settings.md and .env.example, both generated from the classes (`python -m tools.settings_docs`), and a
test fails when they drift apart.

Each entrypoint composes the classes it needs as fields (a `ModelReference`, a `TrackingClientSettings`, ...):
one declaration of each variable, whatever the number of processes that read it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlops_sandbox.references import MODEL_NAME_PATTERN, model_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

PLACEHOLDER = "change-me"
"""Every secret in .env.example starts with this, and is refused outside the local sandbox."""
IN_ENV_EXAMPLE: dict[str, Any] = {"env_example": True}
"""Marks one of the few settings that .env.example lists: the ones a user must set, or sets first."""
PER_PROCESS: dict[str, Any] = {"per_process": True}
"""Marks a field that compose and the local stack set for each process (its address, its port in the
container): documented, but not a line of .env.example."""
COMMAND_VARIABLE = "SANDBOX_COMMAND"
"""Set by the `sandbox` command (infra/cli.py) for the one module it runs: the name that module's usage shows."""


def split_host_port(value: str) -> tuple[str, int]:
    """`host:port` (a name, an IPv4 address, or [IPv6]) as (host, port); ValueError naming the value otherwise."""
    host, _, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host, int(port)


def bindable(host: str, port: int) -> bool:
    """Whether a TCP server could listen on `host`:`port` now (IPv6 when `host` has a colon): False while any
    listener holds it, even one that set SO_REUSEPORT as gRPC servers do. A port left in TIME_WAIT by a server
    that just stopped counts as free: the probe sets SO_REUSEADDR, as servers do before they bind."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def command_name(module: str) -> str:
    """The name a command's usage line shows (argparse's `prog`): what the `sandbox` command ran it as
    (`sandbox train`, in SANDBOX_COMMAND), else `python -m MODULE`. The variable is taken out of the
    environment as it is read, so the processes the command starts (the local stack's jobs) show their own."""
    return os.environ.pop(COMMAND_VARIABLE, "") or f"python -m {module}"


class SandboxSettings(BaseSettings):
    """What every settings class of the project shares.

    Empty variables count as unset (compose passes `${VAR:-}` as an empty string). Secrets are `SecretStr`;
    one that still holds the placeholder of .env.example is refused unless SANDBOX_ENVIRONMENT is `local`,
    with a message that names the variable (ValidationError).
    """

    model_config = SettingsConfigDict(
        env_ignore_empty=True, extra="forbid", populate_by_name=True, use_attribute_docstrings=True
    )

    environment: Literal["local", "compose", "cluster"] = Field(
        "local", validation_alias="SANDBOX_ENVIRONMENT", json_schema_extra=PER_PROCESS
    )
    """Where this process runs: `local` (the local stack, tests, your shell) lets the placeholder secrets of
    .env.example through; `compose` and `cluster` refuse them."""

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> SandboxSettings:
        if self.environment == "local":
            return self
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr) and PLACEHOLDER in value.get_secret_value():
                raise ValueError(
                    f"{field.validation_alias} still holds the placeholder from .env.example; "
                    f"set a secret of your own in .env (SANDBOX_ENVIRONMENT={self.environment})"
                )
        return self


class ModelReference(SandboxSettings):
    """A registered model and one of its versions: a number is pinned; an @alias or a stage is followed."""

    name: str = Field("pytorch_simplenn_mnist", pattern=MODEL_NAME_PATTERN, validation_alias="SANDBOX_MODEL_NAME")
    """The registered model's name in MLflow's Model Registry."""
    ref: str = Field("@production", validation_alias="SANDBOX_MODEL_REF")
    """Which version: a number (3) stays pinned; an alias (@production) or a stage (Production) is followed,
    and serving reloads in place when it moves."""

    @field_validator("ref")
    @classmethod
    def _check_ref(cls, value: str) -> str:
        model_uri("x", value)  # raises ValueError naming the accepted forms
        return value.strip()

    @property
    def uri(self) -> str:
        """The `models:/` URI, for example models:/pytorch_simplenn_mnist@production."""
        return model_uri(self.name, self.ref)

    @property
    def follows(self) -> bool:
        """Whether the reference can move (alias or stage), as opposed to a pinned version number."""
        return not self.ref.isdigit()

    def resolve(self, client: MlflowClient) -> str:
        """The version number the reference points at now; RegistryError when it points at none."""
        from mlops_sandbox import registry  # MLflow is imported only by the processes that talk to it

        return registry.resolve_version(client, self.name, self.ref)


class TrackingClientSettings(SandboxSettings):
    """Where a client of MLflow finds the tracking server (or a SQLite store), and how long it waits for it."""

    tracking_uri: str = Field("http://127.0.0.1:5000", validation_alias="MLFLOW_TRACKING_URI")
    """The tracking server's URL, or a sqlite:/// URI for a store without a server."""
    wait_seconds: float = Field(120.0, gt=0, validation_alias="SANDBOX_TRACKING_WAIT_SECONDS")
    """How long a client waits for the tracking server to answer before it gives up (seconds)."""
    username: str | None = Field(None, validation_alias="MLFLOW_TRACKING_USERNAME")
    """MLflow's own: the user a client signs in as when the server's basic-auth app is on (SANDBOX_AUTH); MLflow's
    client sends it as HTTP basic auth. Compose and the local stack set the admin for training, the CLI and the
    rehearsal, and the read-only serving user for serving. Unset: no credentials are sent."""
    password: SecretStr | None = Field(None, validation_alias="MLFLOW_TRACKING_PASSWORD")
    """MLflow's own: that user's password."""


AUTH_DOCS = "docs/operations.md#authentication"
MIN_PASSWORD_LENGTH = 12
"""MLflow's auth store refuses a shorter password (mlflow/utils/validation.py, `_validate_password`)."""


class AuthSettings(SandboxSettings):
    """MLflow's basic-auth app on the tracking server (`mlflow server --app-name basic-auth`), and its accounts.

    Off by default for the local sandbox, which binds loopback only; turn it on before the stack is reachable
    from another machine. With it on, every secret below must be set and must not hold the placeholder, in every
    environment (`local` included), or the start fails with a ValidationError that names the variable.
    """

    enabled: bool = Field(False, validation_alias="SANDBOX_AUTH", json_schema_extra=IN_ENV_EXAMPLE)
    """Turn on MLflow's basic-auth app, first thing before the sandbox is reachable from another machine: every
    request to the tracking server, the UI included, then needs a user and password (401 without, 403 without
    the permission). Needs SANDBOX_AUTH_ADMIN_PASSWORD; compose also SANDBOX_AUTH_SERVING_PASSWORD and
    MLFLOW_FLASK_SERVER_SECRET_KEY (docs/settings.md)."""
    admin_username: str = Field("admin", min_length=1, validation_alias="SANDBOX_AUTH_ADMIN_USERNAME")
    """The tracking server's admin user (MLflow's admin_username): training, promotions, the CLI and the UI sign
    in as this user."""
    admin_password: SecretStr | None = Field(None, validation_alias="SANDBOX_AUTH_ADMIN_PASSWORD")
    """The admin's password (at least 12 characters, MLflow's minimum). Required with SANDBOX_AUTH=true. Set at
    every start of the tracking server: .env stays the truth, and a password changed in MLflow is reset."""
    serving_username: str = Field("serving", min_length=1, validation_alias="SANDBOX_AUTH_SERVING_USERNAME")
    """The read-only user that serving signs in as: it reads the registry and downloads models, and cannot
    promote. The tracking server creates it at start."""
    serving_password: SecretStr | None = Field(None, validation_alias="SANDBOX_AUTH_SERVING_PASSWORD")
    """The serving user's password (at least 12 characters). Compose: required with SANDBOX_AUTH=true; the
    local stack generates one and keeps it in SANDBOX_DIR when unset."""
    flask_secret_key: SecretStr | None = Field(None, validation_alias="MLFLOW_FLASK_SERVER_SECRET_KEY")
    """MLflow's own: the key that signs the auth app's sessions and CSRF tokens (any long random string). Compose:
    required with SANDBOX_AUTH=true; the local stack generates one and keeps it in SANDBOX_DIR when unset."""
    database_uri: str = Field(
        "sqlite:///basic_auth.db", validation_alias="SANDBOX_AUTH_DATABASE_URI", json_schema_extra=PER_PROCESS
    )
    """The auth app's own database of users and permissions (MLflow's database_uri), apart from the tracking
    store. Compose: basic_auth.db in the mlflow-db volume; local stack: SANDBOX_DIR/basic_auth.db."""
    cache_ttl_seconds: int = Field(60, ge=0, le=3600, validation_alias="SANDBOX_AUTH_CACHE_TTL_SECONDS")
    """How long the tracking server trusts a user and password it has checked (seconds; MLflow's
    auth_cache_ttl_seconds, whose own default 0 checks every request). Clients send the password with every
    request (serving's alias poll, each batch of metrics a training run logs), and each check is a scrypt hash
    (werkzeug 3.1): a signed-in registry search cost the server 486-558 ms of CPU with 0, and 24-34 ms with 60
    (60 requests each, this project's 2-core machine, 2026-12-03), so two serving endpoints polling every 2 s
    kept half a core busy. A password changed or a user deleted through MLflow's API counts at once on the
    worker that handled it; with MLFLOW_WORKERS above 1 the other workers, and every worker for a change made in
    the database directly, accept the old password until their entry expires."""

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> AuthSettings:
        """Replaces the parent's check, for all environments: with auth on, a secret everybody knows is no
        secret, and with it off these are not read at all."""
        if not self.enabled:
            return self
        self.require("admin_password")
        for name in ("serving_password", "flask_secret_key"):
            if getattr(self, name) is not None:
                self.require(name)
        if self.admin_username == self.serving_username:
            raise ValueError(
                "SANDBOX_AUTH_SERVING_USERNAME must differ from SANDBOX_AUTH_ADMIN_USERNAME: serving's user is "
                "read-only"
            )
        return self

    def require(self, name: str) -> SecretStr:
        """The secret of field `name`; ValueError naming its variable when it is unset, empty, the placeholder
        of .env.example, or (a password) shorter than MLflow's minimum."""
        variable = type(self).model_fields[name].validation_alias
        value = getattr(self, name)
        secret = value.get_secret_value() if value is not None else ""
        if not secret:
            raise ValueError(f"SANDBOX_AUTH is on, and {variable} is unset or empty: set it in .env ({AUTH_DOCS})")
        if PLACEHOLDER in secret:
            raise ValueError(
                f"SANDBOX_AUTH is on, and {variable} still holds the placeholder from .env.example: set a secret "
                "of your own in .env"
            )
        if name.endswith("password") and len(secret) < MIN_PASSWORD_LENGTH:
            raise ValueError(
                f"{variable} is {len(secret)} characters long; MLflow's auth app needs at least {MIN_PASSWORD_LENGTH}"
            )
        return SecretStr(secret)


class MnistSettings(SandboxSettings):
    """Where MNIST's files are (the training job, predict, the gate and the rehearsal read the same ones)."""

    root: Path = Field(Path("data/mnist"), validation_alias="SANDBOX_MNIST_ROOT", json_schema_extra=IN_ENV_EXAMPLE)
    """A torchvision root that holds MNIST/raw/*-ubyte. A relative path, as the default, is read from the folder
    each command runs in: give a copy of your own as an absolute path. Compose sets its own (the `mnist` volume)."""
    download: bool = Field(True, validation_alias="SANDBOX_MNIST_DOWNLOAD")
    """Download MNIST into the root when its files are missing (needs internet access once)."""


class EndpointSettings(SandboxSettings):
    """The two serving endpoints that a gated promotion and a rehearsal measure versions through."""

    serving_url: str = Field("http://127.0.0.1:8080", validation_alias="SANDBOX_SERVING_URL")
    """V2 endpoint of production (serves @production)."""
    staging_url: str = Field("http://127.0.0.1:8090", validation_alias="SANDBOX_STAGING_URL")
    """V2 endpoint of staging (serves @staging)."""


class ArtifactStoreSettings(SandboxSettings):
    """Where the tracking server keeps the artifacts it proxies, and how it reaches that store.

    Read by the tracking server and the create-bucket job; clients of the server need none of it.
    """

    artifacts_destination: str = Field(
        "./mlartifacts", validation_alias="MLFLOW_ARTIFACTS_DESTINATION", json_schema_extra=PER_PROCESS
    )
    """Where the server stores the artifacts it proxies: s3://bucket/ or a local folder."""
    s3_endpoint_url: str | None = Field(None, validation_alias="MLFLOW_S3_ENDPOINT_URL", json_schema_extra=PER_PROCESS)
    """The S3 API of the object store; unset: AWS S3."""
    aws_access_key_id: SecretStr | None = Field(
        None,
        validation_alias="AWS_ACCESS_KEY_ID",
        examples=[f"{PLACEHOLDER}-access-key"],
        json_schema_extra=IN_ENV_EXAMPLE,
    )
    """Credentials of the object store (MinIO's root user). Only the tracking server, the bucket job and the
    S3 server use them: clients download artifacts through the tracking server."""
    aws_secret_access_key: SecretStr | None = Field(
        None,
        validation_alias="AWS_SECRET_ACCESS_KEY",
        examples=[f"{PLACEHOLDER}-sandbox-secret"],
        json_schema_extra=IN_ENV_EXAMPLE,
    )
    """The secret key (MinIO's root password: at least 8 characters)."""
    dependency_wait_seconds: float = Field(60.0, gt=0, validation_alias="SANDBOX_DEPENDENCY_WAIT_SECONDS")
    """How long the tracking server and the bucket job wait for the database and the object store (seconds)."""

    @property
    def s3_bucket(self) -> str | None:
        """The bucket of an s3:// destination; None for a local folder."""
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


def composed(settings_class: type[SandboxSettings], alias: str) -> Any:
    """A field holding another settings class, read from its own variables when the process starts.

    `alias` names a variable that is never set in practice: pydantic-settings would read a JSON object for the
    whole group from it, and an unprefixed field name could clash with an unrelated variable.
    """
    return Field(default_factory=settings_class, validation_alias=alias)

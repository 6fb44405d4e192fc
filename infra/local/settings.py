"""Settings of the local (no-Docker) stack: where its state lives, and how long it waits.

The services read their own variables (MLFLOW_*, MLSERVER_*, AWS_*, SANDBOX_*). The stack reads .env as
compose does (your environment wins over it), sets only what ties the services together (addresses, ports,
folders in SANDBOX_DIR) from `StackSettings`, and passes everything else through, so that a setting means the
same here as in compose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from infra.local.processes import PROJECT_ROOT
from infra.settings import StackSettings
from mlops_sandbox.settings import AuthSettings, SandboxSettings, composed


class LocalStackSettings(SandboxSettings):
    """The sandbox as local processes: `python -m infra.local.stack` (bash infra/sandbox.sh)."""

    stack: StackSettings = composed(StackSettings, "SANDBOX_LOCAL_STACK")
    auth: AuthSettings = composed(AuthSettings, "SANDBOX_LOCAL_AUTH")
    sandbox_dir: Path = Field(Path(".sandbox"), validation_alias="SANDBOX_DIR")
    """All local state: the SQLite store, S3 objects, served versions, logs and PID files."""
    artifact_store: Literal["s3", "local"] = Field("s3", validation_alias="SANDBOX_ARTIFACT_STORE")
    """s3: an rclone S3 server, as MinIO in compose; local: a folder in SANDBOX_DIR."""
    start_timeout: float = Field(180.0, gt=0, validation_alias="SANDBOX_START_TIMEOUT")
    """How long each service may take to become ready (seconds)."""
    tracking_python: Path = Field(Path(".venv-tracking/bin/python"), validation_alias="SANDBOX_TRACKING_PYTHON")
    """The Python that runs the tracking server, relative to the checkout: that of its own environment, with a
    newer MLflow than training and serving (bash infra/bootstrap.sh makes it; pyproject.toml, `tracking`)."""

    @property
    def root(self) -> Path:
        return self.sandbox_dir.resolve()

    @property
    def tracking_interpreter(self) -> Path:
        """`tracking_python`, resolved against the checkout (not the current directory)."""
        return PROJECT_ROOT / self.tracking_python

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def host(self) -> str:
        """The address a client on this machine reaches the services at: the bind address, or loopback when
        they bind every address."""
        address = self.stack.bind_address
        return "127.0.0.1" if address in ("0.0.0.0", "::", "") else address

    def url(self, port: int) -> str:
        """http://HOST:PORT of a service of the stack."""
        return f"http://{self.host}:{port}"

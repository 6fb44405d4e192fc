"""Where a running local stack's services are, for `sandbox` commands run from another shell.

`up` writes them to SANDBOX_DIR/run/endpoints.env once the tracking server is up (Stack.write_client_endpoints):
a shell that did not start the stack, or started it with other settings, may not know its ports. This module
reads them back without importing MLflow, so that the `sandbox` command stays quick to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from dotenv import dotenv_values
from pydantic import ValidationError

from infra.local.processes import Processes
from infra.local.settings import LocalStackSettings

ENDPOINTS_FILE = "endpoints.env"


class LocalStack(NamedTuple):
    """A local stack that wrote its endpoints in SANDBOX_DIR: its folder, and its client endpoints
    (MLFLOW_TRACKING_URI, SANDBOX_SERVING_URL, ...) while its tracking server runs, else None (`down` stopped it,
    or it died)."""

    folder: Path
    endpoints: dict[str, str] | None


def local_stack() -> LocalStack | None:
    """The local stack of SANDBOX_DIR (as this process's settings name it), running or not, per its endpoints
    file and its tracking server's PID file. None when no stack wrote its endpoints there, or the settings do
    not validate (the command that reads them then says what is wrong)."""
    try:
        settings = LocalStackSettings()
    except ValidationError:
        return None
    path = settings.run / ENDPOINTS_FILE
    if not path.exists():
        return None
    folder = settings.sandbox_dir.resolve()
    if Processes(settings.run, settings.logs, lambda name: {}).running("mlflow") is None:
        return LocalStack(folder, None)
    return LocalStack(folder, {key: value for key, value in dotenv_values(path).items() if value is not None})

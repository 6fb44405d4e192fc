"""Where a running local stack's services are, for `sandbox` commands run from another shell.

`up` writes them to SANDBOX_DIR/run/endpoints.env once the tracking server is up (Stack.write_client_endpoints):
a shell that did not start the stack, or started it with other settings, may not know its ports. This module
reads them back without importing MLflow, so that the `sandbox` command stays quick to start.
"""

from __future__ import annotations

from pathlib import Path

from dotenv import dotenv_values
from pydantic import ValidationError

from infra.local.processes import Processes
from infra.local.settings import LocalStackSettings

ENDPOINTS_FILE = "endpoints.env"


def running_stack_endpoints() -> dict[str, str] | None:
    """The client endpoints of the local stack (MLFLOW_TRACKING_URI, SANDBOX_SERVING_URL, ...) when its tracking
    server is running, per its PID file in SANDBOX_DIR (as this process's settings name it). None when it is
    not running, has written none, or the settings do not validate (the command that reads them then says
    what is wrong)."""
    found = _local_stack()
    return found[1] if found is not None and found[1] is not None else None


def stopped_stack_dir() -> Path | None:
    """SANDBOX_DIR when a local stack has run from it (its endpoints file is there) and its tracking server does
    not run now: `down` stopped it, or it died. None when no stack ran there, it runs, or the settings do not
    validate."""
    found = _local_stack()
    return found[0] if found is not None and found[1] is None else None


def _local_stack() -> tuple[Path, dict[str, str] | None] | None:
    """(SANDBOX_DIR, its endpoints while its tracking server runs, else None) when a stack wrote its endpoints
    there; None otherwise."""
    try:
        settings = LocalStackSettings()
    except ValidationError:
        return None
    path = settings.run / ENDPOINTS_FILE
    if not path.exists():
        return None
    folder = settings.sandbox_dir.resolve()
    if Processes(settings.run, settings.logs, lambda name: {}).running("mlflow") is None:
        return folder, None
    return folder, {key: value for key, value in dotenv_values(path).items() if value is not None}

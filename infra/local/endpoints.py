"""Where a running local stack's services are, for `sandbox` commands run from another shell.

`up` writes them to SANDBOX_DIR/run/endpoints.env once the tracking server is up (Stack.write_client_endpoints):
a shell that did not start the stack, or started it with other settings, may not know its ports. This module
reads them back without importing MLflow, so that the `sandbox` command stays quick to start.
"""

from __future__ import annotations

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
    try:
        settings = LocalStackSettings()
    except ValidationError:
        return None
    path = settings.run / ENDPOINTS_FILE
    processes = Processes(settings.run, settings.logs, lambda name: {})
    if processes.running("mlflow") is None or not path.exists():
        return None
    return {key: value for key, value in dotenv_values(path).items() if value is not None}

"""Connecting to MLflow: a tracking server (waited for, boundedly) or a `sqlite:///` store."""

from __future__ import annotations

import mlflow
import requests
from mlflow.tracking import MlflowClient

from mlops_sandbox.settings import AUTH_DOCS, TrackingClientSettings
from mlops_sandbox.waiting import DependencyUnavailable, wait_for_http

# An endpoint that every signed-in user may read (MLflow's default_permission READ), and that needs one.
SIGNED_IN_PROBE = "/api/2.0/mlflow/registered-models/search?max_results=1"


def is_server(tracking_uri: str) -> bool:
    """Whether `tracking_uri` names a tracking server (http or https) rather than a store."""
    return tracking_uri.startswith(("http://", "https://"))


def connect(settings: TrackingClientSettings) -> MlflowClient:
    """Point MLflow at the tracking URI and return a client of it.

    A tracking server is first waited for: /health must answer 200 within `settings.wait_seconds`, or
    DependencyUnavailable names the address it could not reach. Then its answer to this client's credentials
    is checked (`check_credentials`).
    """
    uri = settings.tracking_uri
    if is_server(uri):
        wait_for_http(
            f"{uri.rstrip('/')}/health",
            service="MLflow tracking server",
            timeout=settings.wait_seconds,
            hint="Check that it is running and that MLFLOW_TRACKING_URI points at it.",
        )
        check_credentials(settings)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def check_credentials(settings: TrackingClientSettings) -> None:
    """One signed-in request, as MLflow's client would send it (MLFLOW_TRACKING_USERNAME and _PASSWORD as HTTP
    basic auth): DependencyUnavailable naming the server and the variables when it answers 401, so that a
    missing or wrong password stops a client at its start with one line instead of a traceback from its
    first call. A server without the auth app answers 200 whatever is sent.
    """
    uri = settings.tracking_uri.rstrip("/")
    password = settings.password.get_secret_value() if settings.password else None
    credentials = (settings.username, password) if settings.username and password else None
    response = requests.get(f"{uri}{SIGNED_IN_PROBE}", auth=credentials, timeout=30)
    if response.status_code != 401:
        return
    who = f"refused user {settings.username!r}" if credentials else "needs a user and password, and none was given"
    raise DependencyUnavailable(
        f"MLflow tracking server at {uri} {who} (401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
        f"(its basic-auth app is on; see {AUTH_DOCS})"
    )

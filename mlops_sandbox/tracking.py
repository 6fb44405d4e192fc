"""Connecting to MLflow: a tracking server (waited for, boundedly) or a `sqlite:///` store."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from mlops_sandbox.settings import TrackingClientSettings
from mlops_sandbox.waiting import wait_for_http


def is_server(tracking_uri: str) -> bool:
    """Whether `tracking_uri` names a tracking server (http or https) rather than a store."""
    return tracking_uri.startswith(("http://", "https://"))


def connect(settings: TrackingClientSettings) -> MlflowClient:
    """Point MLflow at the tracking URI and return a client of it.

    A tracking server is first waited for: /health must answer 200 within `settings.wait_seconds`, or
    DependencyUnavailable names the address it could not reach.
    """
    uri = settings.tracking_uri
    if is_server(uri):
        wait_for_http(
            f"{uri.rstrip('/')}/health",
            service="MLflow tracking server",
            timeout=settings.wait_seconds,
            hint="Check that it is running and that MLFLOW_TRACKING_URI points at it.",
        )
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)

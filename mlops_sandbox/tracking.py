"""Connecting to MLflow: a tracking-server URL (waited for, boundedly) or a `sqlite:///` URI."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from mlops_sandbox.waiting import wait_for_http


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def connect(tracking_uri: str, *, wait_seconds: float = 60.0) -> MlflowClient:
    """Point MLflow at `tracking_uri`; wait until a tracking server answers /health."""
    if is_server(tracking_uri):
        wait_for_http(
            f"{tracking_uri.rstrip('/')}/health",
            service="MLflow tracking server",
            timeout=wait_seconds,
            hint="Check that it is running and that MLFLOW_TRACKING_URI points at it.",
        )
    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)

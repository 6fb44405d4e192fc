"""The tracking server's settings: the backend store's scheme, S3 credentials, the allowed hosts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.mlflow.settings import TrackingServerSettings


def test_tracking_server_refuses_bare_postgresql_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "postgresql://u:p@db/mlflow")
    with pytest.raises(ValidationError, match=r"postgresql\+psycopg2://"):
        TrackingServerSettings()


def test_tracking_server_s3_needs_both_keys_or_neither(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", "s3://mlflow/")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(ValidationError, match="both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        TrackingServerSettings()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    settings = TrackingServerSettings()
    assert settings.s3_bucket == "mlflow"
    assert "s3cr3t-value" not in repr(settings)


def test_tracking_server_is_light_by_default() -> None:
    settings = TrackingServerSettings()
    assert settings.workers == 1
    assert "mlflow:*" in settings.allowed_hosts and "localhost" in settings.allowed_hosts

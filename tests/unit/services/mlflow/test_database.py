"""Waiting for the backend store's database: SQLite at once, PostgreSQL boundedly, refusals without retrying."""

from __future__ import annotations

import time

import pytest
import sqlalchemy

from mlops_sandbox.waiting import DependencyUnavailable
from services.mlflow import database
from services.mlflow.settings import TrackingServerSettings
from tools.ports import free_port


def settings(uri: str, wait: float = 1.0) -> TrackingServerSettings:
    return TrackingServerSettings(backend_store_uri=uri, dependency_wait_seconds=wait)  # type: ignore[arg-type]


def test_sqlite_needs_no_wait(tmp_path) -> None:  # noqa: ANN001 - pytest's tmp_path
    database.wait_for_database(settings(f"sqlite:///{tmp_path / 'mlflow.db'}", wait=0.001))


def test_an_unreachable_postgresql_is_retried_then_named_without_its_password() -> None:
    port = free_port()  # nothing listens there
    began = time.monotonic()
    with pytest.raises(DependencyUnavailable) as raised:
        database.wait_for_database(settings(f"postgresql+psycopg2://mlflow:s3cr3t@127.0.0.1:{port}/mlflow"))
    assert 1.0 <= time.monotonic() - began < 15
    message = str(raised.value)
    assert f"PostgreSQL (MLflow backend store) at 127.0.0.1:{port}/mlflow was not ready after 1 s" in message
    assert "s3cr3t" not in message and "MLFLOW_BACKEND_STORE_URI" in message


def test_refused_credentials_fail_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = []

    class RefusingEngine:
        def connect(self) -> None:
            attempts.append(1)
            orig = Exception('FATAL:  password authentication failed for user "mlflow"')
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, orig)

        def dispose(self) -> None:
            pass

    monkeypatch.setattr(database.sqlalchemy, "create_engine", lambda *args, **kwargs: RefusingEngine())
    with pytest.raises(DependencyUnavailable) as raised:
        database.wait_for_database(settings("postgresql+psycopg2://mlflow:s3cr3t@db.example:5432/mlflow", wait=30))
    assert len(attempts) == 1
    message = str(raised.value)
    assert message.startswith("PostgreSQL at db.example:5432/mlflow refused user 'mlflow'")
    assert "password authentication failed" in message and "s3cr3t" not in message


def test_addresses_never_show_credentials() -> None:
    assert database.database_address("postgresql+psycopg2://u:p@db:6543/runs") == "db:6543/runs"
    assert database.database_address("postgresql+psycopg2://u:p@db/runs") == "db:5432/runs"
    assert database.database_address("sqlite:////var/lib/mlflow/mlflow.db") == "/var/lib/mlflow/mlflow.db"

"""MLFLOW_BACKEND_STORE_URI alone switches the tracking server (and the local stack) to PostgreSQL; a
PostgreSQL that is down or refuses the credentials stops the start with a message naming its host."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import mlflow
import pytest
import sqlalchemy

from mlops_sandbox.processes import group_alive
from tests.support import TRACKING_PYTHON, module_env, run_module, tracking_schema_head, tracking_server
from tools.ports import free_port
from tools.postgres.throwaway import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _server_env(tmp_path: Path, backend: str, **extra: str) -> tuple[dict[str, str], int]:
    port = free_port()
    env = module_env(
        MLFLOW_BACKEND_STORE_URI=backend,
        MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "artifacts"),
        MLFLOW_PORT=str(port),
        **extra,
    )
    return env, port


@pytest.mark.timeout(120)
def test_unreachable_postgres_names_the_host_and_starts_nothing(tmp_path: Path) -> None:
    closed = free_port()
    env, port = _server_env(
        tmp_path, f"postgresql+psycopg2://mlflow:secret@127.0.0.1:{closed}/mlflow", SANDBOX_DEPENDENCY_WAIT_SECONDS="3"
    )
    began = time.monotonic()
    result = run_module("services.mlflow.entrypoint", env=env, timeout=60, python=TRACKING_PYTHON)
    assert result.returncode == 1
    assert f"127.0.0.1:{closed}/mlflow" in result.stderr
    assert "was not ready after 3 s" in result.stderr and "Connection refused" in result.stderr
    assert "secret" not in result.stderr
    assert time.monotonic() - began < 30
    assert not _listening(port)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("database", "password", "reason"),
    [
        (None, "wrong-password", "password authentication failed"),
        ("no_such_db", None, 'database "no_such_db" does not exist'),
    ],
)
def test_refused_credentials_fail_at_once_naming_the_host(
    tmp_path: Path, postgres: PostgresServer, database: str | None, password: str | None, reason: str
) -> None:
    env, port = _server_env(tmp_path, postgres.uri(database, password=password))
    began = time.monotonic()
    result = run_module("services.mlflow.entrypoint", env=env, timeout=60, python=TRACKING_PYTHON)
    assert result.returncode == 1
    assert f"PostgreSQL at 127.0.0.1:{postgres.port}/{database or postgres.database} refused" in result.stderr
    assert reason in result.stderr
    assert postgres.password not in result.stderr
    # A refusal is final: no waiting out the retry budget.
    assert time.monotonic() - began < 20
    assert not _listening(port)


@pytest.mark.timeout(240)
def test_server_creates_the_schema_in_an_empty_database_and_keeps_runs(tmp_path: Path, postgres_uri: str) -> None:
    env, port = _server_env(tmp_path, postgres_uri)
    url = f"http://127.0.0.1:{port}"
    with tracking_server(env, tmp_path, f"{url}/health") as proc:
        client = mlflow.MlflowClient(url)
        experiment = client.create_experiment("backend-switch")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "loss", 0.5, step=3)
        proc_pid = proc.pid
    assert not group_alive(proc_pid)
    log = (tmp_path / "mlflow.log").read_text()
    head = tracking_schema_head()
    assert f"created the MLflow schema (revision {head})" in log

    engine = sqlalchemy.create_engine(postgres_uri)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar() == head
        stored = conn.execute(
            sqlalchemy.text("SELECT key, value, step FROM metrics WHERE run_uuid = :r"), {"r": run.info.run_id}
        ).all()
    engine.dispose()
    assert [tuple(row) for row in stored] == [("loss", 0.5, 3)]

    # A second start finds the schema current and the run still there.
    (tmp_path / "again").mkdir()
    with tracking_server(env, tmp_path / "again", f"{url}/health"):
        assert mlflow.MlflowClient(url).get_run(run.info.run_id).data.metrics == {"loss": 0.5}
    assert f"schema is current (revision {head})" in (tmp_path / "again" / "mlflow.log").read_text()

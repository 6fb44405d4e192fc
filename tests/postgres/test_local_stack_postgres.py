"""The local stack on PostgreSQL: one setting, MLFLOW_BACKEND_STORE_URI, and no SQLite file is made."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy

from tests.support import module_env, run_module
from tools.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


@pytest.mark.timeout(900)
def test_local_stack_up_keeps_runs_and_registry_in_postgres(
    tmp_path: Path, mnist_root: Path, postgres_uri: str
) -> None:
    ports = {
        name: free_port()
        for name in (
            "SANDBOX_MLFLOW_PORT",
            "SANDBOX_SERVING_HTTP_PORT",
            "SANDBOX_SERVING_GRPC_PORT",
            "SANDBOX_SERVING_METRICS_PORT",
        )
    }
    sandbox = tmp_path / "sandbox"
    env = module_env(
        MLFLOW_BACKEND_STORE_URI=postgres_uri,
        SANDBOX_DIR=str(sandbox),
        SANDBOX_ARTIFACT_STORE="local",
        SANDBOX_MNIST_ROOT=str(mnist_root),
        SANDBOX_TRAIN_LIMIT="3000",
        SANDBOX_TRAIN_EPOCHS="1",
        SANDBOX_TRAIN_HIDDEN_SIZES="64",
        SANDBOX_PREDICT_IMAGES="200",
        SANDBOX_MIN_ACCURACY="0.6",
        **{name: str(port) for name, port in ports.items()},
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    try:
        up = run_module("infra.local.stack", "up", env=env, timeout=800)
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        assert "served version 1" in up.stdout
    finally:
        run_module("infra.local.stack", "down", env=env)
    assert "backend postgresql+psycopg2" in (sandbox / "logs" / "mlflow.log").read_text()
    assert not (sandbox / "mlflow.db").exists()
    engine = sqlalchemy.create_engine(postgres_uri)
    with engine.connect() as conn:
        versions = conn.execute(sqlalchemy.text("SELECT version, current_stage, run_id FROM model_versions")).all()
        aliases = conn.execute(sqlalchemy.text("SELECT alias, version FROM registered_model_aliases")).all()
        runs = {row[0] for row in conn.execute(sqlalchemy.text("SELECT run_uuid FROM runs"))}
    engine.dispose()
    assert [(v, stage) for v, stage, _ in versions] == [(1, "Production")]
    assert versions[0][2] in runs
    assert ("production", 1) in {tuple(a) for a in aliases}

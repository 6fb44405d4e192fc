"""Fixtures the unit tests share: a temporary SQLite registry with three versions of the model."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

NAME = "pytorch_simplenn_mnist"


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A SQLite registry with versions 1, 2 and 3 of NAME (test accuracies 0.95, 0.97, 0.98), no alias yet."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("registry-test", artifact_location=str(tmp_path / "artifacts"))
    client.create_registered_model(NAME)
    for accuracy in (0.95, 0.97, 0.98):
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "test_accuracy", accuracy)
        client.set_terminated(run.info.run_id)
        client.create_model_version(NAME, source=str(tmp_path / "m"), run_id=run.info.run_id)
    return client

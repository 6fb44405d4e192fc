from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.local.settings import LocalStackSettings
from services.mlflow.settings import TrackingServerSettings
from services.serving.settings import ServingSettings
from training.settings import TrainingSettings


def test_training_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAIN_HIDDEN_SIZES", "256, 128,64")
    monkeypatch.setenv("TRAIN_EPOCHS", "2")
    monkeypatch.setenv("REGISTER_ALIAS", "Production")
    settings = TrainingSettings()
    assert settings.hidden_sizes == (256, 128, 64)
    assert settings.epochs == 2
    assert settings.register_alias == "production"
    assert settings.model_name == "pytorch_simplenn_mnist"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TRAIN_HIDDEN_SIZES", "512,abc", "comma-separated integers"),
        ("TRAIN_HIDDEN_SIZES", "0", "hidden sizes"),
        ("TRAIN_EPOCHS", "0", "greater than or equal to 1"),
        ("TRAIN_LEARNING_RATE", "-1", "greater than 0"),
        ("REGISTER_ALIAS", "canary", "staging, production"),
        ("MODEL_NAME", "bad name!", "pattern"),
    ],
)
def test_training_rejects_bad_values(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=message) as err:
        TrainingSettings()
    assert variable in str(err.value)


def test_empty_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_ROOT", "")
    monkeypatch.setenv("TRAIN_LIMIT", "")
    settings = TrainingSettings()
    assert settings.mnist_root == Path("data/mnist") and settings.train_limit is None


def test_serving_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServingSettings().model_uri == "models:/pytorch_simplenn_mnist@production"
    monkeypatch.setenv("SERVING_MODEL_REF", "3")
    assert ServingSettings().model_uri == "models:/pytorch_simplenn_mnist/3"
    monkeypatch.setenv("SERVING_MODEL_REF", "canary")
    with pytest.raises(ValidationError, match="invalid model reference"):
        ServingSettings()


def test_serving_ports_must_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSERVER_GRPC_PORT", "8080")
    with pytest.raises(ValidationError, match="must differ"):
        ServingSettings()


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


def test_local_stack_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_ARTIFACT_STORE", "ftp")
    with pytest.raises(ValidationError, match="SANDBOX_ARTIFACT_STORE"):
        LocalStackSettings()
    monkeypatch.setenv("SANDBOX_ARTIFACT_STORE", "local")
    monkeypatch.setenv("S3_BUCKET", "Bad_Bucket")
    with pytest.raises(ValidationError, match="S3_BUCKET"):
        LocalStackSettings()

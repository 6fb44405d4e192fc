"""The rules every settings class follows: placeholders refused outside the local sandbox, one model reference,
typos refused, empty variables unset."""

from __future__ import annotations

import socket

import pytest
from pydantic import SecretStr, ValidationError

from mlops_sandbox.settings import (
    PLACEHOLDER,
    ArtifactStoreSettings,
    ModelReference,
    TrackingClientSettings,
    bindable,
)
from services.mlflow.settings import TrackingServerSettings
from services.s3.settings import S3ServerSettings


def test_placeholder_secrets_are_refused_outside_the_local_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", f"{PLACEHOLDER}-sandbox-secret")
    assert ArtifactStoreSettings().aws_secret_access_key == SecretStr(f"{PLACEHOLDER}-sandbox-secret")
    monkeypatch.setenv("SANDBOX_ENVIRONMENT", "compose")
    for settings_class in (ArtifactStoreSettings, S3ServerSettings):
        with pytest.raises(ValidationError, match="AWS_SECRET_ACCESS_KEY still holds the placeholder") as raised:
            settings_class()
        assert f"{PLACEHOLDER}-sandbox-secret" not in str(raised.value), "the message must not echo the secret"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-secret-of-my-own")
    assert ArtifactStoreSettings().aws_secret_access_key is not None


def test_a_placeholder_password_inside_the_backend_uri_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_ENVIRONMENT", "compose")
    monkeypatch.setenv(
        "MLFLOW_BACKEND_STORE_URI", f"postgresql+psycopg2://mlflow:{PLACEHOLDER}-postgres-password@pg/mlflow"
    )
    with pytest.raises(ValidationError, match="MLFLOW_BACKEND_STORE_URI still holds the placeholder"):
        TrackingServerSettings()


def test_the_model_reference_is_one_object_read_from_two_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ModelReference().uri == "models:/pytorch_simplenn_mnist@production"
    monkeypatch.setenv("SANDBOX_MODEL_NAME", "digits")
    monkeypatch.setenv("SANDBOX_MODEL_REF", "staging")
    model = ModelReference()
    assert (model.uri, model.follows) == ("models:/digits/Staging", True)
    monkeypatch.setenv("SANDBOX_MODEL_REF", "canary")
    with pytest.raises(ValidationError, match="invalid model reference 'canary'"):
        ModelReference()


def test_a_mistyped_setting_is_an_error_not_ignored() -> None:
    with pytest.raises(ValidationError, match="tracking_url"):
        TrackingClientSettings(tracking_url="http://mlflow:5000")  # type: ignore[call-arg]


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.setenv("SANDBOX_TRACKING_WAIT_SECONDS", "")
    assert TrackingClientSettings() == TrackingClientSettings(tracking_uri="http://127.0.0.1:5000", wait_seconds=120)


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_a_port_is_bindable_until_a_listener_takes_it_even_one_that_shares_it(family: int, host: str) -> None:
    with socket.socket(family) as listener:
        # As gRPC's servers bind: SO_REUSEPORT would let a second such listener in, never a plain one.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, 0))
        port = listener.getsockname()[1]
        listener.listen()
        assert not bindable(host, port)
    assert bindable(host, port)

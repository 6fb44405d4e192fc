"""Serving's settings: the composed model reference, and ports that must differ."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.serving.settings import ServingSettings


def test_serving_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServingSettings().model.uri == "models:/pytorch_simplenn_mnist@production"
    monkeypatch.setenv("SANDBOX_MODEL_REF", "3")
    assert ServingSettings().model.uri == "models:/pytorch_simplenn_mnist/3"
    monkeypatch.setenv("SANDBOX_MODEL_REF", "canary")
    with pytest.raises(ValidationError, match="invalid model reference"):
        ServingSettings()


def test_serving_ports_must_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSERVER_GRPC_PORT", "8080")
    with pytest.raises(ValidationError, match="must differ"):
        ServingSettings()

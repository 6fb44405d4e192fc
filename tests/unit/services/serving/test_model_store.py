"""MLServer's settings files, written through MLServer's own settings classes."""

from __future__ import annotations

import json

import pytest
from mlserver.settings import ModelSettings, Settings
from pydantic import ValidationError

from services.serving.model_store import mlserver_file


def test_only_the_given_fields_are_written_whatever_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLServer's classes read MLSERVER_* variables; the file must hold only what serving decided.
    monkeypatch.setenv("MLSERVER_HTTP_PORT", "9999")
    monkeypatch.setenv("MLSERVER_MODEL_MAX_BATCH_SIZE", "7")
    assert json.loads(mlserver_file(Settings, {"parallel_workers": 0, "debug": False})) == {
        "parallel_workers": 0,
        "debug": False,
    }
    model = {
        "name": "m",
        "implementation": "a.B",
        "versions": ["3"],
        "parameters": {"extra": {"registry_version": "3"}},
    }
    assert json.loads(mlserver_file(ModelSettings, model)) == model


def test_a_mistyped_field_is_an_error() -> None:
    with pytest.raises(ValueError, match="Settings has no field parallel_worker"):
        mlserver_file(Settings, {"parallel_worker": 0})
    with pytest.raises(ValidationError):
        mlserver_file(ModelSettings, {"name": "m", "implementation": "a.B", "max_batch_size": "lots"})

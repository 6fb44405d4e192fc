"""The local stack's settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.local.settings import LocalStackSettings


def test_local_stack_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_ARTIFACT_STORE", "ftp")
    with pytest.raises(ValidationError, match="SANDBOX_ARTIFACT_STORE"):
        LocalStackSettings()
    monkeypatch.setenv("SANDBOX_ARTIFACT_STORE", "local")
    monkeypatch.setenv("SANDBOX_S3_BUCKET", "Bad_Bucket")
    with pytest.raises(ValidationError, match="SANDBOX_S3_BUCKET"):
        LocalStackSettings()

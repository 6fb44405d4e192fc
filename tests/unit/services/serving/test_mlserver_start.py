"""The follower started in MLServer's process (services/serving/mlserver_start.py): when, and on what."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.serving import mlserver_start
from services.serving.settings import ServingSettings
from tests.support import free_port


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> ServingSettings:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    for name in ("MLSERVER_HTTP_PORT", "MLSERVER_GRPC_PORT", "MLSERVER_METRICS_PORT"):
        monkeypatch.setenv(name, str(free_port()))
    monkeypatch.delenv("SANDBOX_SERVING_DIR", raising=False)
    monkeypatch.delenv("SANDBOX_SERVING_WEBHOOK_ADDRESS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return ServingSettings()


def test_a_pinned_version_or_no_store_starts_no_follower(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert (
        mlserver_start.start_following(settings(monkeypatch, SANDBOX_MODEL_REF="3", SANDBOX_SERVING_DIR=str(tmp_path)))
        is None
    )
    assert mlserver_start.start_following(settings(monkeypatch, SANDBOX_MODEL_REF="@production")) is None


def test_an_alias_is_followed_in_a_daemon_thread_on_the_entrypoints_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    follower = mlserver_start.start_following(
        settings(
            monkeypatch,
            SANDBOX_MODEL_REF="@production",
            SANDBOX_SERVING_DIR=str(tmp_path),
            SANDBOX_SERVING_REGISTRY_WAIT_SECONDS="1",
        )
    )
    assert follower is not None and follower.model.uri == "models:/pytorch_simplenn_mnist@production"
    assert follower.store.root == tmp_path.resolve()  # type: ignore[attr-defined]
    (thread,) = [t for t in threading.enumerate() if t.name == "follower"]
    assert thread.daemon, "a follower thread that is not a daemon would keep MLServer's process from exiting"
    # Nothing answers on MLServer's port: the follower gives up after the registry wait and says so.
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert "serving: not following models:/pytorch_simplenn_mnist@production" in capsys.readouterr().out

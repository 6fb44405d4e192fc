"""The local stack's configuration: .env read as compose reads it, and each process's environment."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.local.processes import PROJECT_ROOT, StackError
from infra.local.settings import LocalStackSettings
from infra.local.stack import Stack, main, read_env_file, up
from tools.ports import free_port


def test_env_file_is_read_as_compose_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("SANDBOX_MLFLOW_PORT=5055\nSANDBOX_S3_BUCKET=runs\nSANDBOX_DIR=${HOME}/sandbox\n")
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.setenv("SANDBOX_S3_BUCKET", "mine")  # the environment wins over .env, as in compose
    for name in ("SANDBOX_MLFLOW_PORT", "SANDBOX_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert read_env_file(env_file)
    settings = LocalStackSettings()
    assert (settings.stack.mlflow_port, settings.stack.s3_bucket) == (5055, "mine")
    assert settings.sandbox_dir == Path("/home/u/sandbox")
    assert not read_env_file(tmp_path / "missing.env")
    for name in ("SANDBOX_MLFLOW_PORT", "SANDBOX_DIR"):
        os.environ.pop(name, None)


def test_each_process_is_told_where_the_others_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_DIR", str(tmp_path))
    monkeypatch.setenv("SANDBOX_SERVING_HTTP_PORT", "18080")
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "")  # as .env.example leaves it
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    stack = Stack(LocalStackSettings())
    mlflow = stack.env("mlflow")
    assert mlflow["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert mlflow["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://mlflow/"
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert mlflow["AWS_SECRET_ACCESS_KEY"] == stack.env("s3")["AWS_SECRET_ACCESS_KEY"], "one generated key pair"
    assert (tmp_path / "s3-credentials.json").stat().st_mode & 0o077 == 0
    staging, production = stack.env("serving-staging"), stack.env("serving")
    assert staging["SANDBOX_MODEL_REF"] == "@staging" and "SANDBOX_MODEL_REF" not in production
    assert production["MLSERVER_HTTP_PORT"] == "18080" and staging["MLSERVER_HTTP_PORT"] == "8090"
    assert stack.env("training")["SANDBOX_SERVING_URL"] == "http://127.0.0.1:18080"
    assert "AWS_SECRET_ACCESS_KEY" not in stack.env("training"), "clients need no object-store credentials"


def test_with_auth_on_serving_signs_in_read_only_and_only_the_server_sees_the_admin_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_DIR", str(tmp_path))
    monkeypatch.setenv("SANDBOX_AUTH", "true")
    monkeypatch.setenv("SANDBOX_AUTH_ADMIN_PASSWORD", "admin-password-0123")
    for name in ("SANDBOX_AUTH_SERVING_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "SANDBOX_AUTH_DATABASE_URI"):
        monkeypatch.delenv(name, raising=False)
    stack = Stack(LocalStackSettings())
    mlflow, serving, staging = stack.env("mlflow"), stack.env("serving"), stack.env("serving-staging")
    assert mlflow["SANDBOX_AUTH_DATABASE_URI"] == f"sqlite:///{tmp_path / 'basic_auth.db'}"
    assert len(mlflow["SANDBOX_AUTH_SERVING_PASSWORD"]) >= 12 and mlflow["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert (tmp_path / "auth-secrets.json").stat().st_mode & 0o077 == 0
    for endpoint in (serving, staging):
        assert endpoint["MLFLOW_TRACKING_USERNAME"] == "serving"
        assert endpoint["MLFLOW_TRACKING_PASSWORD"] == mlflow["SANDBOX_AUTH_SERVING_PASSWORD"], "one kept password"
        assert "SANDBOX_AUTH_ADMIN_PASSWORD" not in endpoint
    for job in ("training", "promote", "rehearsal", "predict"):
        env = stack.env(job)
        assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == ("admin", "admin-password-0123")
        assert "SANDBOX_AUTH_ADMIN_PASSWORD" not in env


def test_with_auth_on_the_stack_refuses_to_start_without_an_admin_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_DIR", str(tmp_path))
    monkeypatch.setenv("SANDBOX_AUTH", "true")
    monkeypatch.setenv("SANDBOX_AUTH_ADMIN_PASSWORD", "change-me-admin-password")
    with pytest.raises(ValidationError, match="SANDBOX_AUTH_ADMIN_PASSWORD still holds the placeholder"):
        LocalStackSettings()


def test_the_tracking_server_runs_from_its_own_environment_and_a_missing_one_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SANDBOX_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_TRACKING_PYTHON", raising=False)
    assert LocalStackSettings().tracking_interpreter == PROJECT_ROOT / ".venv-tracking" / "bin" / "python"
    monkeypatch.setenv("SANDBOX_ARTIFACT_STORE", "s3")
    monkeypatch.setenv("SANDBOX_TRACKING_PYTHON", str(tmp_path / "no-venv" / "bin" / "python"))
    stack = Stack(LocalStackSettings())
    # Checked before the ports, whose defaults another sandbox on this machine may hold, and before S3 starts.
    with pytest.raises(
        StackError, match=r"tracking server's environment is missing .*SANDBOX_TRACKING_PYTHON.*bootstrap"
    ):
        up(stack, train=False)
    assert stack.processes.running("s3") is None
    assert stack.processes.running("mlflow") is None
    assert "started" not in capsys.readouterr().out


def test_a_port_taken_by_another_program_stops_up_before_anything_starts_and_names_its_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SANDBOX_DIR", str(tmp_path))
    monkeypatch.setenv("SANDBOX_ARTIFACT_STORE", "s3")
    monkeypatch.setenv("SANDBOX_S3_PORT", str(free_port()))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("SANDBOX_MLFLOW_PORT", str(taken.getsockname()[1]))
        stack = Stack(LocalStackSettings())
        with pytest.raises(StackError, match=r"for mlflow is already in use .* SANDBOX_MLFLOW_PORT=\.\.\. in \.env"):
            up(stack, train=False)
    # S3 comes before MLflow in `up`: it was not started, then left behind.
    assert stack.processes.running("s3") is None
    assert "s3: started" not in capsys.readouterr().out


def test_a_rehearsal_with_nothing_running_says_to_start_the_sandbox_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SANDBOX_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no .env here
    assert main(["rehearse", "good"]) == 1
    error = capsys.readouterr().err
    assert "not running: mlflow" in error and "start the sandbox first: bash infra/sandbox.sh" in error
    assert "stays up" not in error  # nothing runs: nothing to inspect or stop

"""Authentication, one setting away: what SANDBOX_AUTH refuses at start, the command and INI it gives MLflow, and
the two accounts it writes into the auth app's own database (MLflow's real store, on SQLite)."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from mlflow.server.auth.config import read_auth_config
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
from pydantic import ValidationError

from mlops_sandbox.settings import AuthSettings
from services.mlflow import auth
from services.mlflow.entrypoint import server_command, server_env
from services.mlflow.settings import TrackingServerSettings

ADMIN_PASSWORD = "admin-password-0123"
SERVING_PASSWORD = "serving-password-0123"


@pytest.fixture()
def auth_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SANDBOX_AUTH on with every secret set; the auth database in tmp_path."""
    database = tmp_path / "auth" / "basic_auth.db"
    monkeypatch.setenv("SANDBOX_AUTH", "true")
    monkeypatch.setenv("SANDBOX_AUTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("SANDBOX_AUTH_SERVING_PASSWORD", SERVING_PASSWORD)
    monkeypatch.setenv("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask-key-" + "0" * 32)
    monkeypatch.setenv("SANDBOX_AUTH_DATABASE_URI", f"sqlite:///{database}")
    return database


def test_auth_is_off_by_default_and_then_asks_for_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SANDBOX_AUTH", "SANDBOX_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = TrackingServerSettings()
    assert not settings.auth.enabled
    assert "--app-name" not in server_command(settings)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SANDBOX_AUTH_ADMIN_PASSWORD", "", "SANDBOX_AUTH_ADMIN_PASSWORD is unset or empty"),
        ("SANDBOX_AUTH_ADMIN_PASSWORD", "change-me-admin-password", "SANDBOX_AUTH_ADMIN_PASSWORD still holds the"),
        ("SANDBOX_AUTH_ADMIN_PASSWORD", "short", "SANDBOX_AUTH_ADMIN_PASSWORD is 5 characters long"),
        ("SANDBOX_AUTH_SERVING_PASSWORD", "", "SANDBOX_AUTH_SERVING_PASSWORD is unset or empty"),
        ("SANDBOX_AUTH_SERVING_PASSWORD", "change-me-too-long-enough", "SANDBOX_AUTH_SERVING_PASSWORD still holds"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "", "MLFLOW_FLASK_SERVER_SECRET_KEY is unset or empty"),
        ("SANDBOX_AUTH_SERVING_USERNAME", "admin", "SANDBOX_AUTH_SERVING_USERNAME must differ"),
    ],
)
def test_with_auth_on_a_missing_placeholder_or_short_secret_stops_the_server_naming_it(
    auth_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    # In the local environment too, where other placeholders pass: a password everybody knows protects nothing.
    monkeypatch.setenv("SANDBOX_ENVIRONMENT", "local")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=message):
        TrackingServerSettings()


def test_with_auth_on_the_server_runs_mlflows_basic_auth_app_on_a_private_ini(
    auth_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = TrackingServerSettings()
    command = server_command(settings)
    assert command[command.index("--app-name") + 1] == "basic-auth"
    ini = auth.write_config(settings.auth, tmp_path)
    assert ini.stat().st_mode & 0o077 == 0, "the INI holds the admin's password"
    config = configparser.ConfigParser()
    config.read(ini)
    assert dict(config["mlflow"]) | {"admin_password": "?"} == {
        "default_permission": "READ",
        "database_uri": f"sqlite:///{auth_env}",
        "admin_username": "admin",
        "admin_password": "?",
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds": "60",
    }
    env = server_env(settings, ini)
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(ini)
    # MLflow's own reader takes the credential cache's lifetime from it.
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    assert read_auth_config().auth_cache_ttl_seconds == 60
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("flask-key-")


def test_provisioning_writes_the_admin_and_a_read_only_serving_user_idempotently(
    auth_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = AuthSettings()
    assert auth.provision_users(settings) == "created 'admin' (admin), created 'serving' (read-only)"
    assert auth_env.stat().st_mode & 0o077 == 0, "the password hashes are the server's alone"
    store = SqlAlchemyStore()
    store.init_db(settings.database_uri)
    # Someone changed both passwords in MLflow and made serving an admin; .env stays the truth at the next start.
    store.update_user("admin", password="changed-in-the-ui-0123")
    store.update_user("serving", password="changed-in-the-ui-0123", is_admin=True)
    assert auth.provision_users(settings) == "updated 'admin' (admin), updated 'serving' (read-only)"
    assert store.authenticate_user("admin", ADMIN_PASSWORD) and store.get_user("admin").is_admin
    assert store.authenticate_user("serving", SERVING_PASSWORD) and not store.get_user("serving").is_admin
    assert not store.authenticate_user("serving", "changed-in-the-ui-0123")
    assert [user.username for user in store.list_users()] == ["admin", "serving"]
    store.engine.dispose()

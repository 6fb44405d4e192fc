"""MLflow's basic-auth app on the tracking server: its configuration file, and the two accounts it needs.

MLflow's app (mlflow/server/auth, from `mlflow[auth]`; the same in 3.12 and in the server's 3.17.2) reads an INI
file named by MLFLOW_AUTH_CONFIG_PATH when the server imports it, keeps users and permissions in a database of
its own (`database_uri`), creates the INI's admin user only when no user of that name exists, and signs its
sessions and CSRF tokens with MLFLOW_FLASK_SERVER_SECRET_KEY. Here, before the server starts, the admin and the
read-only serving user are written into that database directly with MLflow's own store (`SqlAlchemyStore`), so
that the passwords in .env are the ones that work at every start, not only at the first.

`default_permission = READ` is MLflow's own default: a signed-in user without a grant may read everything and
change nothing. That is exactly what serving needs (the registry and the model's artifacts), so its user
gets no grant at all; promoting needs EDIT on the registered model, which only the admin (and the owner who
created the model) has. Webhooks are admin-only in the app (`CreateWebhook: sender_is_admin`, 3.12 to 3.17.2), so
serving's read-only user cannot register one and serving follows its alias by polling.

`auth_cache_ttl_seconds` (SANDBOX_AUTH_CACHE_TTL_SECONDS, 60 s by default; MLflow's own default, 0, is off):
MLflow checks basic auth's password with a scrypt hash on every request (a signed-in registry search cost the
server about 0.5 s of CPU), and the sandbox's clients send it with every request; the app's cache of checked
credentials keeps that to once a minute per client (about 30 ms a request; docs/settings.md).
"""

from __future__ import annotations

import configparser
from pathlib import Path

from sqlalchemy.engine import make_url

from mlops_sandbox.settings import AuthSettings

APP_NAME = "basic-auth"
"""`mlflow server --app-name basic-auth`: the app's entry point in mlflow's package metadata."""
DEFAULT_PERMISSION = "READ"


def write_config(auth: AuthSettings, directory: Path) -> Path:
    """Write the app's basic_auth.ini into `directory` (mode 600: it holds the admin's password); its path.

    The admin's password is in it because MLflow's app reads `admin_password` at import; after
    `provision_users` the admin exists, and the app leaves it as it is.
    """
    config = configparser.ConfigParser()
    config["mlflow"] = {
        "default_permission": DEFAULT_PERMISSION,
        "database_uri": auth.database_uri,
        "admin_username": auth.admin_username,
        "admin_password": auth.require("admin_password").get_secret_value(),
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds": str(auth.cache_ttl_seconds),
    }
    path = directory / "basic_auth.ini"
    path.touch(mode=0o600)
    with path.open("w") as file:
        config.write(file)
    return path


def provision_users(auth: AuthSettings) -> str:
    """Create or update the admin and the serving user in the app's database (creating its schema with MLflow's
    own migrations); idempotent. Returns one line saying what was done.

    The admin gets SANDBOX_AUTH_ADMIN_PASSWORD and the admin flag; the serving user gets
    SANDBOX_AUTH_SERVING_PASSWORD and loses the admin flag if someone gave it one. Raises MlflowException when
    MLflow's store refuses a user, and sqlalchemy's errors when the database cannot be reached.
    """
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    url = make_url(auth.database_uri)
    database = url.database if url.get_backend_name() == "sqlite" else None
    sqlite_file = Path(database) if database and database != ":memory:" else None
    if sqlite_file:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    store = SqlAlchemyStore()
    store.init_db(auth.database_uri)
    if sqlite_file:
        # Password hashes: readable by the server's user only.
        sqlite_file.chmod(0o600)
    try:
        done = []
        for username, field, is_admin in (
            (auth.admin_username, "admin_password", True),
            (auth.serving_username, "serving_password", False),
        ):
            password = auth.require(field).get_secret_value()
            if store.has_user(username):
                store.update_user(username, password=password, is_admin=is_admin)
                done.append(f"updated {username!r}")
            else:
                store.create_user(username, password, is_admin=is_admin)
                done.append(f"created {username!r}")
            done[-1] += " (admin)" if is_admin else " (read-only)"
        return ", ".join(done)
    finally:
        store.engine.dispose()

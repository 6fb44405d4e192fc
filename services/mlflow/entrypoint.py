"""Start the MLflow tracking server with artifacts proxied to S3 or a folder.

    python -m services.mlflow.entrypoint

Before anything is started: waits (boundedly) for the backend store's database and for the object store,
and checks the bucket; then it brings the database schema to the one this MLflow expects, with MLflow's
own migrations (see `prepare_schema`). Only then does it run `mlflow server`, with one worker and no job
runner, supervised as a process group by a small supervisor that this process becomes (`supervise`), and with
uvicorn in the place of MLflow's CLI process (services/mlflow/server_cli.py). A database that is unreachable
or refuses the credentials stops it here with a message naming the host, so the server never runs half-way.
With SANDBOX_AUTH=true it runs MLflow's basic-auth app, after writing the admin and the read-only serving user
into the app's database (services/mlflow/auth.py); a missing or placeholder secret stops it first, naming the
variable.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import sqlalchemy
from mlflow.exceptions import MlflowException
from pydantic import ValidationError

from mlops_sandbox.processes import replace_process, supervise_command
from mlops_sandbox.s3 import bucket_exists, s3_client, wait_for_s3
from mlops_sandbox.waiting import DependencyUnavailable
from services.mlflow import auth
from services.mlflow.database import database_address, prepare_schema, wait_for_database
from services.mlflow.settings import TrackingServerSettings


def server_command(settings: TrackingServerSettings) -> list[str]:
    """`mlflow server` with proxied artifacts. The backend-store URI, which holds a password, goes in the
    environment (`server_env`), where `ps` does not show it."""
    return [
        sys.executable,
        "-m",
        "services.mlflow.server_cli",
        "server",
        "--artifacts-destination",
        settings.artifacts_destination,
        "--serve-artifacts",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
        "--allowed-hosts",
        settings.allowed_hosts,
        *(["--app-name", auth.APP_NAME] if settings.auth.enabled else []),
    ]


def server_env(settings: TrackingServerSettings, auth_config: Path | None = None) -> dict[str, str]:
    """The server's environment: MLflow reads the backend store from MLFLOW_BACKEND_STORE_URI itself, and the
    auth app its INI file (`auth_config`, written by `auth.write_config`) from MLFLOW_AUTH_CONFIG_PATH."""
    env = dict(os.environ)
    if auth_config is not None:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config)
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = settings.auth.require("flask_secret_key").get_secret_value()
    env["MLFLOW_BACKEND_STORE_URI"] = settings.backend_store_uri.get_secret_value()
    # The job runner (huey) is only needed for MLflow's GenAI jobs; without it the server is 2 processes.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if settings.s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    # Model-registry webhooks, which serving registers to hear of alias moves (services/serving/webhooks.py).
    env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] = settings.webhook_allowed_schemes
    env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] = str(settings.webhook_allow_private_ips).lower()
    env["MLFLOW_WEBHOOK_CACHE_TTL"] = str(settings.webhook_cache_ttl)
    if settings.webhook_secret_encryption_key:
        env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] = settings.webhook_secret_encryption_key.get_secret_value()
    return env


def check_artifact_store(settings: TrackingServerSettings) -> None:
    """Wait for the object store and check the bucket; DependencyUnavailable naming the endpoint otherwise."""
    bucket = settings.s3_bucket
    if bucket is None:
        return
    endpoint = settings.s3_endpoint_url or "AWS S3"
    client = s3_client(settings.s3_endpoint_url, settings.aws_access_key_id, settings.aws_secret_access_key)
    wait_for_s3(client, endpoint=endpoint, timeout=settings.dependency_wait_seconds)
    if not bucket_exists(client, bucket):
        raise DependencyUnavailable(
            f"bucket {bucket!r} does not exist at {endpoint}: create it first "
            "(python -m infra.ops.create_bucket, or the create-bucket service in compose)"
        )


def main() -> int:
    try:
        settings = TrackingServerSettings()
        wait_for_database(settings)
        check_artifact_store(settings)
        schema = prepare_schema(settings)
        users = auth.provision_users(settings.auth) if settings.auth.enabled else None
    except ValidationError as err:
        print(f"invalid tracking-server settings:\n{err}", file=sys.stderr)
        return 2
    except DependencyUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except sqlalchemy.exc.SQLAlchemyError as err:
        print(
            f"error: preparing the MLflow schema in "
            f"{database_address(settings.backend_store_uri.get_secret_value())} or the auth database in "
            f"{database_address(settings.auth.database_uri)} failed: {str(err).splitlines()[0]}",
            file=sys.stderr,
        )
        return 1
    except MlflowException as err:
        print(f"error: MLflow's auth store refused a user: {err.message}", file=sys.stderr)
        return 1
    backend = settings.backend_store_uri.get_secret_value()
    if settings.webhook_secret_encryption_key is None:
        print(
            "mlflow: MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY is unset: webhook secrets are encrypted with a key that "
            "lasts until this server stops, and webhooks registered now fail after a restart",
            flush=True,
        )
    print(
        f"mlflow: {schema}; serving on http://{settings.host}:{settings.port}, backend "
        f"{backend.split('://')[0]} at {database_address(backend)}, "
        f"artifacts {settings.artifacts_destination}",
        flush=True,
    )
    if users is None:
        print("mlflow: authentication is off (SANDBOX_AUTH=false): whoever reaches the port can change it", flush=True)
        supervise(settings, server_env(settings))
    print(f"mlflow: basic-auth app on, users in {database_address(settings.auth.database_uri)}: {users}", flush=True)
    # The INI holds the admin's password: a private folder (mode 700), removed when the server stops.
    folder = tempfile.mkdtemp(prefix="mlflow-auth-")
    supervise(settings, server_env(settings, auth.write_config(settings.auth, Path(folder))), remove=folder)
    return 0  # not reached


def supervise(settings: TrackingServerSettings, env: dict[str, str], remove: str | None = None) -> NoReturn:
    """Replace this process with a supervisor of `mlflow server` (mlops_sandbox.processes.supervise_command),
    which stops its process group on SIGTERM or SIGINT, kills what is left after the grace period and then
    deletes `remove`. Exec, not a child: what this process imported to prepare the store (MLflow, SQLAlchemy:
    164 MiB of PSS, measured) is not kept for the server's lifetime. OSError if Python cannot be executed."""
    argv = supervise_command(
        server_command(settings), grace=settings.shutdown_grace_seconds, name="mlflow", remove=remove
    )
    replace_process(argv, env)


if __name__ == "__main__":
    sys.exit(main())

"""Start the MLflow tracking server with artifacts proxied to S3 or a folder.

    python -m services.mlflow.entrypoint

Waits (boundedly) for the object store and checks the bucket, then runs `mlflow server` with one worker
and no job runner, supervised as a process group.
"""

from __future__ import annotations

import os
import sys

from pydantic import ValidationError

from services.common.processes import run_supervised
from services.common.s3 import bucket_exists, s3_client, wait_for_s3
from services.common.waiting import DependencyUnavailable
from services.mlflow.settings import TrackingServerSettings


def server_command(settings: TrackingServerSettings) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", settings.backend_store_uri,
        "--artifacts-destination", settings.artifacts_destination,
        "--serve-artifacts",
        "--host", settings.host,
        "--port", str(settings.port),
        "--workers", str(settings.workers),
        "--allowed-hosts", settings.allowed_hosts,
    ]  # fmt: skip


def server_env(settings: TrackingServerSettings) -> dict[str, str]:
    env = dict(os.environ)
    # The job runner (huey) is only needed for MLflow's GenAI jobs; without it the server is 2 processes.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if settings.s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    return env


def check_artifact_store(settings: TrackingServerSettings) -> None:
    bucket = settings.s3_bucket
    if bucket is None:
        return
    endpoint = settings.s3_endpoint_url or "AWS S3"
    client = s3_client(settings.s3_endpoint_url, settings.aws_access_key_id, settings.aws_secret_access_key)
    wait_for_s3(client, endpoint=endpoint, timeout=settings.dependency_wait_seconds)
    if not bucket_exists(client, bucket):
        raise DependencyUnavailable(
            f"bucket {bucket!r} does not exist at {endpoint}: create it first "
            "(python -m infra.create_bucket, or the create-bucket service in compose)"
        )


def main() -> int:
    try:
        settings = TrackingServerSettings()
        check_artifact_store(settings)
    except ValidationError as err:
        print(f"invalid tracking-server settings:\n{err}", file=sys.stderr)
        return 2
    except DependencyUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"mlflow: serving on http://{settings.host}:{settings.port}, backend "
        f"{settings.backend_store_uri.split('://')[0]}, artifacts {settings.artifacts_destination}",
        flush=True,
    )
    return run_supervised(
        server_command(settings), env=server_env(settings), grace=settings.shutdown_grace_seconds, name="mlflow"
    )


if __name__ == "__main__":
    sys.exit(main())

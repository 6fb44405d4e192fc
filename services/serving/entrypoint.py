"""Serve a registered model with MLServer, through the tutorial's command.

    python -m services.serving.entrypoint

Waits (boundedly) until the requested version, alias or stage exists in the registry, resolves it to a
version number, then runs

    mlflow models serve -m models:/NAME/VERSION --env-manager local --enable-mlserver

as a supervised process group: V2 REST on MLSERVER_HTTP_PORT, gRPC on MLSERVER_GRPC_PORT, Prometheus
metrics on MLSERVER_METRICS_PORT.
"""

from __future__ import annotations

import os
import sys

from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from services.common.processes import run_supervised
from services.common.waiting import DependencyUnavailable, NotReadyYet, wait_for
from services.serving.settings import ServingSettings
from training.registry import RegistryError, model_uri, resolve_version
from training.tracking import connect


def wait_for_version(client: MlflowClient, settings: ServingSettings) -> str:
    """The version number that the configured reference points at, once it exists."""

    def probe() -> str:
        try:
            return resolve_version(client, settings.model_name, settings.model_ref)
        except RegistryError as err:
            raise NotReadyYet(str(err)) from err

    return wait_for(
        probe,
        service=f"model {settings.model_uri} in the registry",
        address=settings.tracking_uri,
        timeout=settings.registry_wait_seconds,
        hint="Train and register one first: python -m training.train (the training service in compose).",
    )


def serve_command(settings: ServingSettings, version: str) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "models", "serve",
        "-m", model_uri(settings.model_name, version),
        "--env-manager", settings.env_manager,
        "--enable-mlserver",
        "-h", settings.host,
        "-p", str(settings.http_port),
    ]  # fmt: skip


def serve_env(settings: ServingSettings, version: str) -> dict[str, str]:
    env = dict(os.environ)
    # mlflow runs `mlserver start` by name: make it resolve to this interpreter's environment even
    # when the venv is not activated.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env.update(
        {
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
            # Keep artifact downloads on the tracking server's proxy: no presigned URLs straight to S3,
            # so serving needs no object-store credentials or network path.
            "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
            "MLSERVER_GRPC_PORT": str(settings.grpc_port),
            "MLSERVER_METRICS_PORT": str(settings.metrics_port),
            # Set here rather than with `-w`: mlflow drops a worker count of 0.
            "MLSERVER_PARALLEL_WORKERS": str(settings.workers),
            "MLSERVER_MODEL_NAME": settings.model_name,
            "MLSERVER_MODEL_VERSION": version,
        }
    )
    return env


def main() -> int:
    try:
        settings = ServingSettings()
        client = connect(settings.tracking_uri, wait_seconds=settings.registry_wait_seconds)
        version = wait_for_version(client, settings)
    except ValidationError as err:
        print(f"invalid serving settings:\n{err}", file=sys.stderr)
        return 2
    except DependencyUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"serving: {settings.model_uri} is version {version}; V2 REST on http://{settings.host}:{settings.http_port},"
        f" gRPC on {settings.host}:{settings.grpc_port}, metrics on http://{settings.host}:{settings.metrics_port}/metrics",
        flush=True,
    )
    return run_supervised(
        serve_command(settings, version),
        env=serve_env(settings, version),
        grace=settings.shutdown_grace_seconds,
        name="serving",
    )


if __name__ == "__main__":
    sys.exit(main())

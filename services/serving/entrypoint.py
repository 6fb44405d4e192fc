"""Serve a registered model with MLServer, through `mlflow models serve --enable-mlserver`, following its alias.

    python -m services.serving.entrypoint

Waits (boundedly) until the requested version, alias or stage exists in the registry, downloads that
version into SANDBOX_SERVING_DIR and runs

    mlflow models serve -m <SANDBOX_SERVING_DIR>/current --env-manager local --enable-mlserver

(services/serving/mlflow_serve.py: MLflow's CLI, with `mlserver start` taking over its process at the end)
as a supervised process group: V2 REST on MLSERVER_HTTP_PORT, gRPC on MLSERVER_GRPC_PORT, Prometheus
metrics on MLSERVER_METRICS_PORT. This process then becomes the group's supervisor (mlops_sandbox.processes),
which stops the group on SIGTERM. When SANDBOX_MODEL_REF is an alias or a stage, a follower
(services/serving/follower.py, started in MLServer's process by services/serving/mlserver_start.py) keeps
the served version equal to the one it points at, in place. With SANDBOX_SERVING_WEBHOOK_ADDRESS, it also
registers MLflow's model-registry webhook for alias moves and looks at the registry as soon as one arrives
(services/serving/webhooks.py); polling stays the fallback.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from mlops_sandbox.processes import replace_process, supervise_command
from mlops_sandbox.registry import RegistryError
from mlops_sandbox.settings import split_host_port
from mlops_sandbox.tracking import connect
from mlops_sandbox.waiting import DependencyUnavailable, NotReadyYet, wait_for
from services.serving.follower import FOLLOWER_RETRY_SECONDS
from services.serving.model_store import ModelStore
from services.serving.settings import ServingSettings


def wait_for_version(client: MlflowClient, settings: ServingSettings) -> str:
    """The version number that the configured reference points at, once it exists."""

    def probe() -> str:
        try:
            return settings.model.resolve(client)
        except RegistryError as err:
            raise NotReadyYet(str(err)) from err

    return wait_for(
        probe,
        service=f"model {settings.model.uri} in the registry",
        address=settings.tracking.tracking_uri,
        timeout=settings.registry_wait_seconds,
        hint="Train and register one first: python -m training.train (the training service in compose).",
    )


def serve_command(settings: ServingSettings, model_dir: Path) -> list[str]:
    """MLflow's own `mlflow models serve ... --enable-mlserver`, on the local copy of the served version; run
    through services/serving/mlflow_serve.py, whose only change is that `mlserver start` replaces the CLI's
    process at the end instead of running as its child."""
    return [
        sys.executable,
        "-m",
        "services.serving.mlflow_serve",
        "models",
        "serve",
        "-m",
        str(model_dir),
        "--env-manager",
        settings.env_manager,
        "--enable-mlserver",
        "-h",
        settings.host,
        "-p",
        str(settings.http_port),
    ]


def serve_env(settings: ServingSettings) -> dict[str, str]:
    """The environment of `mlflow models serve` and its `mlserver` child: ports, threads, the model's name."""
    env = dict(os.environ)
    # mlflow runs `mlserver start` by name: make it resolve to this interpreter's environment even
    # when the venv is not activated.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env.update(
        {
            "MLFLOW_TRACKING_URI": settings.tracking.tracking_uri,
            "MLSERVER_GRPC_PORT": str(settings.grpc_port),
            "MLSERVER_METRICS_PORT": str(settings.metrics_port),
            # torch sizes its intra-op thread pool from this when it is imported (see settings.torch_threads).
            "OMP_NUM_THREADS": str(settings.torch_threads),
            "MLSERVER_MODEL_NAME": settings.model.name,
        }
    )
    # MLServer reads this into every model settings it loads, file or not, so the model would stay registered
    # under the first version forever: `/versions/1/infer` would answer with whatever version was loaded
    # later. The served model stays unversioned (see runtime.py); the registry version travels in its settings.
    env.pop("MLSERVER_MODEL_VERSION", None)
    return env


def ports_in_use(settings: ServingSettings) -> list[str]:
    """`VARIABLE=port` for each of the three ports that another program holds on settings.host.

    Checked before MLServer starts because it would not say: gRPC binds with SO_REUSEPORT, so a second
    server on a gRPC port that another MLServer holds starts without an error, and the two then share its
    clients. The probe binds without SO_REUSEPORT, which fails on a port that any listener holds.
    """
    busy = []
    listeners = [
        ("MLSERVER_HTTP_PORT", settings.host, settings.http_port),
        ("MLSERVER_GRPC_PORT", settings.host, settings.grpc_port),
        ("MLSERVER_METRICS_PORT", settings.host, settings.metrics_port),
    ]
    if settings.webhook_address:
        listeners.append(("SANDBOX_SERVING_WEBHOOK_ADDRESS", *split_host_port(settings.webhook_address)))
    for name, host, port in listeners:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # SO_REUSEADDR: a port left in TIME_WAIT by a server that just stopped is free to use.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                busy.append(f"{name}={port} ({host})")
    return busy


def main() -> int:
    # Artifact downloads stay on the tracking server's proxy: no presigned URLs straight to S3, so serving
    # needs no object-store credentials or network path.
    os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"] = "false"
    try:
        settings = ServingSettings()
        if busy := ports_in_use(settings):
            print(
                f"error: another program listens on {', '.join(busy)}: stop it or choose other ports",
                file=sys.stderr,
            )
            return 1
        client = connect(settings.tracking, request_retry_seconds=FOLLOWER_RETRY_SECONDS)
        version = wait_for_version(client, settings)
    except ValidationError as err:
        print(f"invalid serving settings:\n{err}", file=sys.stderr)
        return 2
    except DependencyUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    root = settings.serving_dir or Path(tempfile.mkdtemp(prefix="serving-"))
    store = ModelStore.for_serving(settings, root)
    temporary = None if settings.serving_dir else str(root)
    try:
        store.prepare(version, settings.model.ref)
    except (MlflowException, OSError) as err:
        print(f"error: cannot download {settings.model.uri} (version {version}): {err}", file=sys.stderr)
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
        return 1
    store.activate(version)
    print(
        f"serving: {settings.model.uri} is version {version}"
        + (f", followed every {settings.poll_seconds:g} s" if settings.model.follows else " (pinned)")
        + f"; V2 REST on http://{settings.host}:{settings.http_port}, gRPC on {settings.host}:"
        f"{settings.grpc_port}, metrics on http://{settings.host}:{settings.metrics_port}/metrics",
        flush=True,
    )
    # Exec, not a child: what this process imported to wait and download (MLflow's client: 129 MiB of PSS,
    # measured) is not kept for the server's lifetime. The follower runs inside MLServer's process
    # (mlserver_start.py), which imports MLflow anyway, on the store named here; the supervisor stops
    # MLServer's process group on SIGTERM and then removes a temporary store.
    env = serve_env(settings)
    env["SANDBOX_SERVING_DIR"] = str(store.root)
    argv = supervise_command(
        serve_command(settings, store.current), grace=settings.shutdown_grace_seconds, name="serving", remove=temporary
    )
    replace_process(argv, env)


if __name__ == "__main__":
    sys.exit(main())

"""Serve a registered model with MLServer, through the tutorial's command, following its alias.

    python -m services.serving.entrypoint

Waits (boundedly) until the requested version, alias or stage exists in the registry, downloads that
version into SERVING_DIR and runs

    mlflow models serve -m <SERVING_DIR>/current --env-manager local --enable-mlserver

as a supervised process group: V2 REST on MLSERVER_HTTP_PORT, gRPC on MLSERVER_GRPC_PORT, Prometheus
metrics on MLSERVER_METRICS_PORT. When SERVING_MODEL_REF is an alias or a stage, a follower polls the
registry and, when it moves, downloads the new version, repoints `current` and has MLServer reload the
model in place (the new copy is up before the old one goes): no restart, no failed request.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from mlops_sandbox.processes import run_supervised
from mlops_sandbox.registry import RegistryError, resolve_version
from mlops_sandbox.tracking import connect
from mlops_sandbox.waiting import DependencyUnavailable, NotReadyYet, http_ok, wait_for
from services.serving.model_store import ModelStore
from services.serving.settings import ServingSettings


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


def serve_command(settings: ServingSettings, model_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlflow",
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


def serve_env(settings: ServingSettings, version: str) -> dict[str, str]:
    env = dict(os.environ)
    # mlflow runs `mlserver start` by name: make it resolve to this interpreter's environment even
    # when the venv is not activated.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env.update(
        {
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
            "MLSERVER_GRPC_PORT": str(settings.grpc_port),
            "MLSERVER_METRICS_PORT": str(settings.metrics_port),
            # torch sizes its intra-op thread pool from this when it is imported (see settings.torch_threads).
            "OMP_NUM_THREADS": str(settings.torch_threads),
            "MLSERVER_MODEL_NAME": settings.model_name,
            "MLSERVER_MODEL_VERSION": version,
        }
    )
    return env


class Follower:
    """Keeps the served version equal to what the followed alias or stage points at."""

    def __init__(self, client: MlflowClient, settings: ServingSettings, store: ModelStore) -> None:
        self.client = client
        self.settings = settings
        self.store = store
        self.stopped = threading.Event()

    def switch(self, version: str) -> float:
        """Serve `version`: download it, repoint `current`, reload in place. Returns the seconds it took."""
        began = time.monotonic()
        previous = self.store.current_version()
        self.store.prepare(version, self.settings.model_ref)
        self.store.activate(version)
        url = f"{self.settings.url}/v2/repository/models/{self.settings.model_name}/load"
        response = requests.post(url, timeout=300)
        if response.status_code != 200:
            if previous:
                self.store.activate(previous)
            raise RuntimeError(f"MLServer refused to load version {version}: {response.status_code} {response.text}")
        self.store.prune()
        return time.monotonic() - began

    def run(self) -> None:
        ready = http_ok(f"{self.settings.url}/v2/models/{self.settings.model_name}/ready")
        while not self.stopped.is_set():
            try:
                ready()
                break
            except (NotReadyYet, requests.RequestException):
                self.stopped.wait(1.0)
        while not self.stopped.wait(self.settings.poll_seconds):
            try:
                target = resolve_version(self.client, self.settings.model_name, self.settings.model_ref)
                current = self.store.current_version()
                if target != current:
                    took = self.switch(target)
                    print(
                        f"serving: {self.settings.model_uri} moved to version {target}; now serving it "
                        f"(was {current}, switched in {took:.2f} s)",
                        flush=True,
                    )
            except (RegistryError, MlflowException, requests.RequestException, RuntimeError, OSError) as err:
                print(
                    f"serving: could not follow {self.settings.model_uri}, still serving "
                    f"{self.store.current_version()}: {err}",
                    flush=True,
                )


def main() -> int:
    # Artifact downloads stay on the tracking server's proxy: no presigned URLs straight to S3, so serving
    # needs no object-store credentials or network path.
    os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"] = "false"
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
    root = settings.serving_dir or Path(tempfile.mkdtemp(prefix="serving-"))
    store = ModelStore(
        root.resolve(),
        settings.model_name,
        server_settings=settings.server_settings,
        runtime_settings=settings.runtime_settings,
        model_settings=settings.model_settings,
    )
    try:
        try:
            store.prepare(version, settings.model_ref)
        except (MlflowException, OSError) as err:
            print(f"error: cannot download {settings.model_uri} (version {version}): {err}", file=sys.stderr)
            return 1
        store.activate(version)
        print(
            f"serving: {settings.model_uri} is version {version}"
            + (f", followed every {settings.poll_seconds:g} s" if settings.follows else " (pinned)")
            + f"; V2 REST on http://{settings.host}:{settings.http_port}, gRPC on {settings.host}:"
            f"{settings.grpc_port}, metrics on http://{settings.host}:{settings.metrics_port}/metrics",
            flush=True,
        )
        follower = Follower(client, settings, store)
        if settings.follows:
            threading.Thread(target=follower.run, name="follower", daemon=True).start()
        code = run_supervised(
            serve_command(settings, store.current),
            env=serve_env(settings, version),
            grace=settings.shutdown_grace_seconds,
            name="serving",
        )
        follower.stopped.set()
        return code
    finally:
        if settings.serving_dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

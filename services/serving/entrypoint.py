"""Serve a registered model with MLServer, through `mlflow models serve --enable-mlserver`, following its alias.

    python -m services.serving.entrypoint

Waits (boundedly) until the requested version, alias or stage exists in the registry, downloads that
version into SANDBOX_SERVING_DIR and runs

    mlflow models serve -m <SANDBOX_SERVING_DIR>/current --env-manager local --enable-mlserver

(services/serving/mlflow_serve.py: MLflow's CLI, with `mlserver start` taking over its process at the end)
as a supervised process group: V2 REST on MLSERVER_HTTP_PORT, gRPC on MLSERVER_GRPC_PORT, Prometheus
metrics on MLSERVER_METRICS_PORT. That process is forked before the wait (PendingServer) and runs MLflow's CLI
once the version is downloaded; this process then becomes the group's supervisor (mlops_sandbox.processes),
which stops the group on SIGTERM. When SANDBOX_MODEL_REF is an alias or a stage, a follower
(services/serving/follower.py, started in MLServer's process by services/serving/mlserver_start.py) keeps
the served version equal to the one it points at, in place. With SANDBOX_SERVING_WEBHOOK_ADDRESS, it also
registers MLflow's model-registry webhook for alias moves and looks at the registry as soon as one arrives
(services/serving/webhooks.py); polling stays the fallback.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import NoReturn

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from mlops_sandbox.processes import replace_process, supervise_command
from mlops_sandbox.registry import RegistryError
from mlops_sandbox.settings import bindable, split_host_port
from mlops_sandbox.tracking import connect
from mlops_sandbox.waiting import DependencyUnavailable, NotReadyYet, wait_for
from services.serving import mlflow_serve
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


def serve_args(settings: ServingSettings, model_dir: Path) -> list[str]:
    """MLflow's own `mlflow models serve ... --enable-mlserver` (the arguments after `mlflow`), on the local copy
    of the served version; run by services/serving/mlflow_serve.py, whose only change is that `mlserver start`
    replaces the CLI's process at the end instead of running as its child."""
    return [
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


class PendingServer:
    """The server's process, forked before this one waits for the registry and downloads: the child leads a
    new session (so a process group of its own), imports MLflow's CLI meanwhile, and runs it once `start`
    hands it the arguments (serve_args) and the environment; at its end, MLflow's CLI becomes MLServer
    (mlflow_serve.py). A fresh `python -m mlflow models serve` after the download would import MLflow a
    second time: 1.5-2 s of the cold start here (measured, tools/benchmark). Forked this early, this process
    has one thread, so the child inherits no lock that another thread holds (MLflow's download pool and
    tqdm's monitor start later).

    When this process stops without calling `start` (an error, a signal), the child reads the end of the pipe
    and exits 0.
    """

    def __init__(self) -> None:
        read, self._write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._write)
            _serve_when_told(read)
        os.close(read)

    def start(self, args: list[str], env: dict[str, str]) -> None:
        """Hand the child its arguments and environment. A child that has already exited (its traceback is in
        the log) is left for the supervisor to reap, which then exits with its code."""
        try:
            with os.fdopen(self._write, "wb") as pipe:
                pipe.write(json.dumps({"args": args, "env": env}).encode())
        except BrokenPipeError:
            pass

    def cancel(self) -> int:
        """Tell the child there is nothing to serve, and reap it: its exit code (0)."""
        os.close(self._write)
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


def _serve_when_told(read: int) -> NoReturn:
    code = 1
    try:
        os.setsid()
        mlflow_serve.prepare()
        with os.fdopen(read, "rb") as pipe:
            told = pipe.read()
        if told:
            order = json.loads(told)
            os.environ.clear()
            os.environ.update(order["env"])
            code = mlflow_serve.main(order["args"])
        else:  # this process gave up before the server could start: nothing to serve
            code = 0
    except SystemExit as stop:
        # click exits with an int; a string is a message that Python would print.
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


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
    listeners = [
        ("MLSERVER_HTTP_PORT", settings.host, settings.http_port),
        ("MLSERVER_GRPC_PORT", settings.host, settings.grpc_port),
        ("MLSERVER_METRICS_PORT", settings.host, settings.metrics_port),
    ]
    if settings.webhook_address:
        listeners.append(("SANDBOX_SERVING_WEBHOOK_ADDRESS", *split_host_port(settings.webhook_address)))
    return [f"{name}={port} ({host})" for name, host, port in listeners if not bindable(host, port)]


def main() -> int:
    # Artifact downloads stay on the tracking server's proxy: no presigned URLs straight to S3, so serving
    # needs no object-store credentials or network path.
    os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"] = "false"
    try:
        settings = ServingSettings()
    except ValidationError as err:
        print(f"invalid serving settings:\n{err}", file=sys.stderr)
        return 2
    if busy := ports_in_use(settings):
        print(f"error: another program listens on {', '.join(busy)}: stop it or choose other ports", file=sys.stderr)
        return 1
    server = PendingServer()
    try:
        store, temporary = prepare_store(settings)
    except BaseException:
        server.cancel()
        raise
    if store is None:
        server.cancel()
        return 1
    # This process then execs into the supervisor, so that what it imported to wait and download (MLflow's
    # client: 129 MiB of PSS, measured) is not kept for the server's lifetime. The follower runs inside
    # MLServer's process (mlserver_start.py), which imports MLflow anyway, on the store named here; the
    # supervisor stops MLServer's process group on SIGTERM and then removes a temporary store.
    env = serve_env(settings)
    env["SANDBOX_SERVING_DIR"] = str(store.root)
    server.start(serve_args(settings, store.current), env)
    argv = supervise_command(
        None, grace=settings.shutdown_grace_seconds, name="serving", remove=temporary, pid=server.pid
    )
    replace_process(argv, env)


def prepare_store(settings: ServingSettings) -> tuple[ModelStore | None, str | None]:
    """Wait (boundedly) for the version the settings name, download it and make it current: the store, and the
    temporary folder to remove at the end when SANDBOX_SERVING_DIR is unset. (None, None) once the reason it
    could not is printed: the registry or the version did not come in time, or the download failed."""
    try:
        client = connect(settings.tracking, request_retry_seconds=FOLLOWER_RETRY_SECONDS)
        version = wait_for_version(client, settings)
    except DependencyUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return None, None
    root = settings.serving_dir or Path(tempfile.mkdtemp(prefix="serving-"))
    store = ModelStore.for_serving(settings, root)
    temporary = None if settings.serving_dir else str(root)
    try:
        store.prepare(version, settings.model.ref)
    except (MlflowException, OSError) as err:
        print(f"error: cannot download {settings.model.uri} (version {version}): {err}", file=sys.stderr)
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
        return None, None
    store.activate(version)
    print(
        f"serving: {settings.model.uri} is version {version}"
        + (f", followed every {settings.poll_seconds:g} s" if settings.model.follows else " (pinned)")
        + f"; V2 REST on http://{settings.host}:{settings.http_port}, gRPC on {settings.host}:"
        f"{settings.grpc_port}, metrics on http://{settings.host}:{settings.metrics_port}/metrics",
        flush=True,
    )
    return store, temporary


if __name__ == "__main__":
    sys.exit(main())

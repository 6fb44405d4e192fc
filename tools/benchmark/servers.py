"""The servers under test, each started as its own process group on free loopback ports and stopped as one.

stock_scoring   (b) mlflow models serve -m models:/NAME/V --env-manager local
stock_mlserver  (c) the same with --enable-mlserver, every MLServer setting at its default
ours            (d) python -m services.serving.entrypoint, as shipped (its defaults)
kserve          (e) KServe's Python model server (tools/benchmark/kserve_server.py in .venv-kserve), its defaults
routed          (f) (d) behind the router (python -m services.router.entrypoint, Envoy), all traffic to it;
                (g) two replicas of (d) behind it, half the traffic each
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from mlops_sandbox.processes import start_group, stop_group
from mlops_sandbox.router import RouterAdmin
from mlops_sandbox.waiting import http_ok, wait_for
from tools.ports import free_port

PYTHON = sys.executable
PROJECT_ROOT = Path(__file__).resolve().parents[2]
STOCK_MLSERVER_MODEL = "mlflow-model"  # the name mlflow gives the model when --enable-mlserver starts it


def clean_env(tracking_uri: str, **overrides: str) -> dict[str, str]:
    """This environment without any serving setting (so stock means stock), plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSERVER_", "SERVING_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, PYTHONUNBUFFERED="1")
    # mlflow runs `mlserver start` by name: make it resolve to this interpreter's environment.
    env["PATH"] = os.pathsep.join([os.path.dirname(PYTHON), env.get("PATH", "")])
    env.update(overrides)
    return env


def process_tree(pid: int) -> list[psutil.Process]:
    """Process `pid` and every process below it, whatever its process group (our serving entrypoint runs
    MLServer in a group of its own). psutil.NoSuchProcess if `pid` is gone."""
    leader = psutil.Process(pid)
    return [leader, *leader.children(recursive=True)]


@dataclass(frozen=True)
class Running:
    pid: int
    cold_start_s: float
    http_url: str
    grpc_target: str | None

    def processes(self) -> list[psutil.Process]:
        """The leader and every process below it (process_tree)."""
        return process_tree(self.pid)

    def mlserver_pid(self) -> int:
        """The `mlserver start` process (ours runs it as `python -m services.serving.mlserver_start start`):
        with parallel_workers=0 it parses, infers and answers."""
        for process in self.processes():
            try:
                argv = process.cmdline()
            except psutil.Error:
                continue
            launcher = any(arg.endswith("mlserver") or arg == "services.serving.mlserver_start" for arg in argv[:3])
            if launcher and "start" in argv:
                return process.pid
        raise RuntimeError(f"no `mlserver start` process below pid {self.pid}")

    def rss_mb(self) -> float:
        """Resident memory of the server's whole process tree (MiB). Shared pages count once per process, as
        `ps` shows them."""
        total = 0
        for process in self.processes():
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total / 2**20


@contextmanager
def started(
    name: str,
    argv: list[str],
    env: dict[str, str],
    address: str,
    log_dir: Path,
    *,
    timeout: float = 300,
    ready: Callable[[], object] | None = None,
) -> Iterator[tuple[int, float]]:
    """Start `argv` as a process group; yield (pgid, seconds until it answered); stop the group. It has answered
    when `ready()` returns (wait_for's probe: NotReadyYet and connection errors are retried), by default when
    GET `address` (a URL) answers 200. RuntimeError, with its log's tail, when it exits before answering;
    DependencyUnavailable, naming `address`, when it does not answer within `timeout` seconds."""
    log_path = log_dir / f"{name}.log"
    began = time.monotonic()
    with open(log_path, "wb") as log:
        proc = start_group(argv, env=env, stdout=log.fileno(), cwd=str(PROJECT_ROOT))
    try:
        answers = ready if ready is not None else http_ok(address, timeout=2)

        def probe() -> None:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            answers()

        # Polled every 50 ms, not with a backoff: the time this takes is the cold start the benchmark reports.
        wait_for(probe, service=name, address=address, timeout=timeout, interval=0.05, hint=f"log: {log_path}")
        yield proc.pid, time.monotonic() - began
    finally:
        stop_group(proc.pid, grace=15, leader=proc)


def mlflow_serve(model_uri: str, port: int, *options: str) -> list[str]:
    """`mlflow models serve` on loopback `port` with this environment's packages, as a user types it."""
    serve = [PYTHON, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", *options]
    return [*serve, "-h", "127.0.0.1", "-p", str(port)]


@contextmanager
def stock_scoring(tracking_uri: str, model_uri: str, log_dir: Path) -> Iterator[Running]:
    port = free_port()
    argv = mlflow_serve(model_uri, port)
    url = f"http://127.0.0.1:{port}"
    with started("stock_scoring", argv, clean_env(tracking_uri), f"{url}/ping", log_dir) as (pgid, cold):
        yield Running(pgid, cold, url, None)


@contextmanager
def stock_mlserver(tracking_uri: str, model_uri: str, log_dir: Path) -> Iterator[Running]:
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    argv = mlflow_serve(model_uri, port, "--enable-mlserver")
    # Only the ports are set (MLServer's fixed defaults would collide with other servers); nothing else.
    env = clean_env(tracking_uri, MLSERVER_GRPC_PORT=str(grpc_port), MLSERVER_METRICS_PORT=str(metrics_port))
    url = f"http://127.0.0.1:{port}"
    ready = f"{url}/v2/models/{STOCK_MLSERVER_MODEL}/ready"
    with started("stock_mlserver", argv, env, ready, log_dir) as (pgid, cold):
        yield Running(pgid, cold, url, f"127.0.0.1:{grpc_port}")


@contextmanager
def ours(tracking_uri: str, model_name: str, log_dir: Path, **settings: str) -> Iterator[Running]:
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = clean_env(
        tracking_uri,
        SANDBOX_MODEL_NAME=model_name,
        SANDBOX_SERVING_DIR=str(log_dir / "serving"),
        MLSERVER_HOST="127.0.0.1",
        MLSERVER_HTTP_PORT=str(port),
        MLSERVER_GRPC_PORT=str(grpc_port),
        MLSERVER_METRICS_PORT=str(metrics_port),
        **settings,
    )
    url = f"http://127.0.0.1:{port}"
    ready = f"{url}/v2/models/{model_name}/ready"
    with started("ours", [PYTHON, "-m", "services.serving.entrypoint"], env, ready, log_dir) as (pgid, cold):
        yield Running(pgid, cold, url, f"127.0.0.1:{grpc_port}")


@contextmanager
def kserve(
    tracking_uri: str, model_uri: str, model_name: str, python: Path, log_dir: Path, **environment: str
) -> Iterator[Running]:
    """KServe's model server with `python` (the venv's interpreter, tools/benchmark/kserve_env.py), serving
    `model_uri` as `model_name`, with `environment` added to its environment (OMP_NUM_THREADS=1, ...). Only the
    ports are set; KServe listens on every interface (it has no host option), the benchmark's traffic stays on
    loopback."""
    port, grpc_port = free_port(), free_port()
    argv = [str(python), "-m", "tools.benchmark.kserve_server", "--model_name", model_name, "--model_uri", model_uri]
    argv += ["--http_port", str(port), "--grpc_port", str(grpc_port)]
    url = f"http://127.0.0.1:{port}"
    ready = f"{url}/v2/models/{model_name}/ready"
    with started("kserve", argv, clean_env(tracking_uri, **environment), ready, log_dir) as (pgid, cold):
        yield Running(pgid, cold, url, f"127.0.0.1:{grpc_port}")


@contextmanager
def routed(behind: Running, log_dir: Path, second: Running | None = None) -> Iterator[Running]:
    """The router in front of `behind` (both its upstreams point at it, as a rollout's production at 0 %); with
    `second`, in front of two replicas: `behind` as production, `second` as the candidate, half the requests
    each (the router's split, as a rollout's 50 % step sets it)."""
    assert behind.grpc_target is not None
    rest, grpc, admin = free_port(), free_port(), free_port()
    upstream_rest = behind.http_url.removeprefix("http://")
    other = second or behind
    assert other.grpc_target is not None
    env = dict(
        os.environ,
        SANDBOX_ROUTER_REST_ADDRESS=f"127.0.0.1:{rest}",
        SANDBOX_ROUTER_GRPC_ADDRESS=f"127.0.0.1:{grpc}",
        SANDBOX_ROUTER_ADMIN_ADDRESS=f"127.0.0.1:{admin}",
        SANDBOX_ROUTER_PRODUCTION_REST=upstream_rest,
        SANDBOX_ROUTER_CANDIDATE_REST=other.http_url.removeprefix("http://"),
        SANDBOX_ROUTER_PRODUCTION_GRPC=behind.grpc_target,
        SANDBOX_ROUTER_CANDIDATE_GRPC=other.grpc_target,
        SANDBOX_ROUTER_CONFIG_DIR=str(log_dir),
    )
    argv = [PYTHON, "-m", "services.router.entrypoint"]
    with started("router", argv, env, f"http://127.0.0.1:{admin}/ready", log_dir) as (pgid, cold):
        if second is not None:
            RouterAdmin(f"http://127.0.0.1:{admin}").set_split(50)
        yield Running(pgid, cold, f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc}")

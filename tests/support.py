"""Real servers for tests: started as process groups on free loopback ports, stopped as groups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import requests

from infra.settings import StackSettings
from mlops_sandbox.processes import group_alive, start_group, stop_group
from mlops_sandbox.waiting import http_ok, wait_for
from tools.ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TRACKING_PYTHON = str(PROJECT_ROOT / os.environ.get("SANDBOX_TRACKING_PYTHON", ".venv-tracking/bin/python"))
"""The tracking server's own environment (bash infra/bootstrap.sh), with a newer MLflow than the clients' PYTHON:
the tests run the server as the sandbox does, so that they test that pair."""


def host_port_names() -> list[str]:
    """Every host port of the stack (SANDBOX_*_PORT), as StackSettings declares them."""
    aliases = (str(field.validation_alias) for field in StackSettings.model_fields.values())
    return [alias for alias in aliases if alias.endswith("_PORT")]


def local_stack_env(root: Path, mnist_root: Path) -> tuple[dict[str, str], dict[str, int]]:
    """The environment of a local stack (infra.local.stack) in `root` with every host port free, training a
    small model (5,000 images, 1 epoch) and checking 500 images; with the ports it uses, by variable name.
    Nothing of the test process's own sandbox (its S3 keys, tracking URI, backend store) leaks in."""
    ports = {name: free_port() for name in host_port_names()}
    env = module_env(
        SANDBOX_DIR=str(root),
        SANDBOX_MNIST_ROOT=str(mnist_root),
        SANDBOX_TRAIN_LIMIT="5000",
        SANDBOX_TRAIN_EPOCHS="1",
        SANDBOX_PREDICT_IMAGES="500",
        SANDBOX_MIN_ACCURACY="0.85",
        **{name: str(port) for name, port in ports.items()},
    )
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI", "MLFLOW_BACKEND_STORE_URI"):
        env.pop(key, None)
    return env, ports


def module_env(**overrides: str) -> dict[str, str]:
    """The test process's environment plus `overrides`, for running the project's entrypoints."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.update(overrides)
    return env


def logged_model_id(source: str) -> str:
    """The logged model's id in a model version's `models:/m-<id>` source, for `create_model_version(model_id=...)`,
    which the tracking server's MLflow requires with such a source. A 3.12 client reads `ModelVersion.model_id` as
    None from that server (measured), so the id is taken from the source."""
    assert source.startswith("models:/m-"), f"not a logged model's source: {source}"
    return source.removeprefix("models:/")


def tracking_mlflow(code: str, *args: str) -> str:
    """Run Python `code` (with `args` in sys.argv[1:]) in the tracking server's environment; its stdout, stripped.
    For what must be done with the server's MLflow release, such as reading its schema revision."""
    done = subprocess.run(
        [TRACKING_PYTHON, "-c", code, *args], cwd=str(PROJECT_ROOT), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def tracking_schema_head() -> str:
    """The alembic revision of the tracking server's MLflow schema (which the clients' older MLflow does not know)."""
    return tracking_mlflow("from mlops_sandbox.store_schema import head_revision; print(head_revision())")


@contextmanager
def tracking_server(
    env: dict[str, str], log_dir: Path, ready_url: str, *, timeout: float = 120
) -> Iterator[subprocess.Popen[bytes]]:
    """The MLflow tracking server (services.mlflow.entrypoint) from its own environment, as the sandbox runs it."""
    with server(
        "mlflow", "services.mlflow.entrypoint", env, log_dir, ready_url, timeout=timeout, python=TRACKING_PYTHON
    ) as proc:
        yield proc


class Service:
    """A server run as `python -m module args` in its own process group, which a test can crash (SIGKILL to the
    whole group, as the OOM killer or a power cut would) and start again as it was: the same command,
    environment, ports and data. Its output goes to `log_dir`/`name`.log, appended across restarts."""

    def __init__(
        self,
        name: str,
        module: str,
        env: dict[str, str],
        log_dir: Path,
        ready_url: str,
        *,
        args: tuple[str, ...] = (),
        timeout: float = 120,
        any_answer: bool = False,
        python: str = PYTHON,
    ) -> None:
        self.name, self.module, self.env, self.args, self.python = name, module, env, args, python
        self.log_path, self.ready_url, self.timeout, self.any_answer = (
            log_dir / f"{name}.log",
            ready_url,
            timeout,
            any_answer,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        """Start it and wait until `ready_url` answers 200 (or at all, with `any_answer`); RuntimeError with the
        log's end if it exits first, DependencyUnavailable if it is not ready within `timeout` seconds."""
        with open(self.log_path, "ab" if self.proc is not None else "wb") as log:
            proc = start_group(
                [self.python, "-m", self.module, *self.args], env=self.env, stdout=log.fileno(), cwd=str(PROJECT_ROOT)
            )
        self.proc = proc
        url = self.ready_url
        probe = (lambda: requests.get(url, timeout=3)) if self.any_answer else http_ok(url)

        def ready() -> None:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            probe()

        try:
            wait_for(ready, service=self.name, address=url, timeout=self.timeout, hint=f"log: {self.log_path}")
        except BaseException:
            self.stop()
            raise
        return proc

    def kill(self) -> None:
        """SIGKILL every process it started, at once, as a crashed machine or container would lose them: no
        shutdown handler runs, nothing is flushed. A supervising entrypoint runs its server in a process group
        of its own (mlops_sandbox.processes.run_supervised): every group of the process tree is killed."""
        assert self.proc is not None, f"{self.name} was never started"
        try:
            tree = [self.proc.pid, *(child.pid for child in psutil.Process(self.proc.pid).children(recursive=True))]
        except psutil.NoSuchProcess:
            tree = [self.proc.pid]
        groups = set()
        for pid in tree:
            try:
                groups.add(os.getpgid(pid))
            except ProcessLookupError:
                pass
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        while any(group_alive(group) for group in groups):
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL after 15 s; nothing when it is not running."""
        if self.proc is not None:
            stop_group(self.proc.pid, grace=15, leader=self.proc)


@contextmanager
def restartable_server(
    name: str,
    module: str,
    env: dict[str, str],
    log_dir: Path,
    ready_url: str,
    *,
    args: tuple[str, ...] = (),
    timeout: float = 120,
    any_answer: bool = False,
    python: str = PYTHON,
) -> Iterator[Service]:
    """A started `Service` until the block ends, then stopped, whatever a test did to it meanwhile."""
    service = Service(
        name, module, env, log_dir, ready_url, args=args, timeout=timeout, any_answer=any_answer, python=python
    )
    service.start()
    try:
        yield service
    finally:
        service.stop()


@contextmanager
def server(
    name: str,
    module: str,
    env: dict[str, str],
    log_dir: Path,
    ready_url: str,
    *,
    args: tuple[str, ...] = (),
    timeout: float = 120,
    any_answer: bool = False,
    python: str = PYTHON,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `python -m module args` until the block ends; yield once `ready_url` answers 200 (or at all)."""
    with restartable_server(
        name, module, env, log_dir, ready_url, args=args, timeout=timeout, any_answer=any_answer, python=python
    ) as service:
        assert service.proc is not None
        yield service.proc


def run_module(
    module: str, *args: str, env: dict[str, str], timeout: float = 600, python: str = PYTHON
) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args` to completion, capturing its output."""
    return subprocess.run(
        [python, "-m", module, *args],
        env=env,
        cwd=str(PROJECT_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_sigterm_stops_supervised_group(proc: subprocess.Popen[Any], *, timeout: float) -> None:
    """SIGTERM a supervising entrypoint: it must exit 0, and the group of its one child must be gone."""
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1, children
    group = int(children[0])
    assert group_alive(group)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=timeout) == 0
    assert not group_alive(group), "the supervised process group outlived its supervisor"

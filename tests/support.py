"""Real servers for tests: started as process groups on free loopback ports, stopped as groups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = start_group([python, "-m", module, *args], env=env, stdout=log.fileno(), cwd=str(PROJECT_ROOT))
    try:
        probe = (lambda: requests.get(ready_url, timeout=3)) if any_answer else http_ok(ready_url)

        def ready() -> None:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            probe()

        wait_for(ready, service=name, address=ready_url, timeout=timeout, hint=f"log: {log_path}")
        yield proc
    finally:
        stop_group(proc.pid, grace=15, leader=proc)


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

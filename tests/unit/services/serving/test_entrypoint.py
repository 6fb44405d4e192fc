"""Serving refuses to start on a port that another program holds, gRPC's included, and names it; the server
process forked before the wait runs MLflow's CLI when told, and leaves nothing behind when it is not."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import uuid

import psutil
import pytest

from services.serving import entrypoint
from tests.support import PROJECT_ROOT
from tools.ports import free_port


def test_a_grpc_port_held_with_so_reuseport_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As another MLServer's gRPC server holds it: SO_REUSEPORT, which would let a second one bind silently.
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        monkeypatch.setenv("MLSERVER_HOST", "127.0.0.1")
        monkeypatch.setenv("MLSERVER_HTTP_PORT", str(free_port()))
        monkeypatch.setenv("MLSERVER_GRPC_PORT", str(port))
        monkeypatch.setenv("MLSERVER_METRICS_PORT", str(free_port()))
        # Nothing listens here: the check must come before any wait for the tracking server.
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
        assert entrypoint.main() == 1
    err = capsys.readouterr().err
    assert f"another program listens on MLSERVER_GRPC_PORT={port} (127.0.0.1)" in err


def test_free_ports_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLSERVER_HTTP_PORT", "MLSERVER_GRPC_PORT", "MLSERVER_METRICS_PORT"):
        monkeypatch.setenv(name, str(free_port()))
    monkeypatch.setenv("MLSERVER_HOST", "127.0.0.1")
    assert entrypoint.ports_in_use(entrypoint.ServingSettings()) == []


# Run in a fresh interpreter: forking pytest's own process would copy its threads and plugins.
PENDING = textwrap.dedent("""
    import os, sys
    from services.serving.entrypoint import PendingServer
    server = PendingServer()
    if sys.argv[1] == "cancel":
        print("child exit", server.cancel())
    else:
        server.start(sys.argv[1:], {**os.environ, "SANDBOX_MARK": "handed over"})
        print("child exit", os.waitstatus_to_exitcode(os.waitpid(server.pid, 0)[1]))
""")


def test_the_pending_server_runs_mlflows_cli_with_the_arguments_it_is_handed() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PENDING, "--version"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "mlflow, version 3.12.0" in done.stdout and "child exit 0" in done.stdout


def test_the_pending_server_exits_quietly_when_the_wait_is_given_up() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PENDING, "cancel"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "child exit 0" and done.stderr == ""


def test_a_registry_that_never_answers_leaves_no_server_process() -> None:
    mark = uuid.uuid4().hex
    env = {
        **os.environ,
        "SANDBOX_TEST_MARK": mark,
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(free_port()),
        "MLSERVER_GRPC_PORT": str(free_port()),
        "MLSERVER_METRICS_PORT": str(free_port()),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "SANDBOX_TRACKING_WAIT_SECONDS": "1",
    }
    with subprocess.Popen(
        [sys.executable, "-m", "services.serving.entrypoint"],
        cwd=PROJECT_ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1
        assert env["MLFLOW_TRACKING_URI"] in err
    # The server process forked before the wait was told there is nothing to serve: no process is left.
    left = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("SANDBOX_TEST_MARK") == mark:
                left.append(process.cmdline())
    assert left == []

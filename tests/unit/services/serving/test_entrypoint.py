"""Serving refuses to start on a port that another program holds, gRPC's included, and names it."""

from __future__ import annotations

import socket

import pytest

from services.serving import entrypoint
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

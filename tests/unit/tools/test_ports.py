"""Ports handed to the servers a test starts must not collide before those servers bind them."""

from __future__ import annotations

import socket

import pytest

from tools import ports
from tools.ports import _ephemeral_range, free_port


def test_ports_asked_for_before_anything_binds_them_all_differ_and_are_bindable() -> None:
    # CI once got the same port for MLSERVER_HTTP_PORT and MLSERVER_METRICS_PORT: three
    # calls in a row, nothing bound in between.
    ports = [free_port() for _ in range(300)]

    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_ports_stay_out_of_the_range_outgoing_connections_take() -> None:
    low, high = _ephemeral_range()

    assert not any(low <= free_port() <= high for _ in range(50))


def test_a_port_a_server_listens_on_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        taken = server.getsockname()[1]
        # A port found free just now, forgotten again: a guess such as spare + 1 is not safe, since something
        # else on the machine held it in one clean CI run.
        spare = free_port()
        monkeypatch.setattr(ports, "_HANDED_OUT", set())
        offered = iter([taken, spare])
        # The next candidates are the listening port, then one nobody holds.
        monkeypatch.setattr(ports._RANDOM, "randrange", lambda *_: next(offered))

        assert free_port() == spare


def test_two_test_processes_hand_out_ports_from_ranges_that_do_not_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest-xdist's two workers (infra/test.sh): each keeps its own record of the ports it handed out, so
    # without a share each, both could hand the same port to servers that have not bound it yet.
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    handed_out = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setattr(ports, "_HANDED_OUT", set())
        handed_out[worker] = [free_port() for _ in range(300)]

    assert max(handed_out["gw0"]) < min(handed_out["gw1"])
    assert max(handed_out["gw1"]) < _ephemeral_range()[0]

"""The bounded wait that every dependent service uses: what it retries, what it does not, how it gives up."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from mlops_sandbox.waiting import DependencyUnavailable, NotReadyYet, http_ok, wait_for, wait_for_http


def test_it_retries_until_the_probe_succeeds_and_returns_its_value() -> None:
    answers: list[str | Exception] = [NotReadyYet("starting"), ConnectionRefusedError("refused"), "ready"]

    def probe() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_for(probe, service="db", address="db:5432", timeout=10, interval=0.01) == "ready"


def test_a_real_error_is_not_retried() -> None:
    calls = []

    def probe() -> None:
        calls.append(1)
        raise ValueError("bad configuration")

    with pytest.raises(ValueError, match="bad configuration"):
        wait_for(probe, service="db", address="db:5432", timeout=10)
    assert len(calls) == 1


def test_it_gives_up_after_the_timeout_naming_the_service_address_last_error_and_hint() -> None:
    def probe() -> None:
        raise NotReadyYet("connection refused")

    began = time.monotonic()
    with pytest.raises(DependencyUnavailable) as raised:
        wait_for(probe, service="PostgreSQL", address="db:5432/mlflow", timeout=0.5, hint="Is it running?")
    assert time.monotonic() - began < 3
    message = str(raised.value)
    assert message.startswith("PostgreSQL at db:5432/mlflow was not ready after 0.5 s")
    assert "connection refused" in message and message.endswith("Is it running?")


def test_notice_is_told_once_what_is_awaited_for_how_long_and_why() -> None:
    answers: list[str | Exception] = [NotReadyYet("starting"), ConnectionRefusedError("refused"), "ready"]
    notices: list[str] = []

    def probe() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    wait_for(probe, service="db", address="db:5432", timeout=10, interval=0.01, hint="Is it up?", notice=notices.append)
    assert notices == ["waiting up to 10 s for db at db:5432 (starting). Is it up?"]
    wait_for(lambda: "ready", service="db", address="db:5432", timeout=10, notice=notices.append)
    assert len(notices) == 1  # nothing to say when the first try succeeds


def test_a_fixed_interval_polls_more_often_than_the_backoff() -> None:
    def count_calls(interval: float | None = None) -> int:
        calls = []

        def probe() -> None:
            calls.append(1)
            raise NotReadyYet("not yet")

        with pytest.raises(DependencyUnavailable):
            wait_for(probe, service="s", address="a", timeout=0.6, interval=interval)
        return len(calls)

    # Backoff: tries at 0, 0.25 and 0.75 s (the last one past the deadline is not made); every 0.05 s: about 12.
    assert count_calls(interval=0.05) > 2 * count_calls()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        self.send_response(200 if self.path == "/ready" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def http_server() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_probes_need_a_200(http_server: str) -> None:
    assert http_ok(f"{http_server}/ready")().status_code == 200
    with pytest.raises(NotReadyYet, match="answered 503"):
        http_ok(f"{http_server}/starting")()
    with pytest.raises(DependencyUnavailable, match=r"model server at .*/starting was not ready"):
        wait_for_http(f"{http_server}/starting", service="model server", timeout=0.3)

"""RouterAdmin without a router: what it refuses, what it sends, how it reads Envoy's runtime back."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from mlops_sandbox.router import (
    CANDIDATE_PERCENT_KEY,
    SHADOW_PERCENT_KEY,
    RouterAdmin,
    RouterUnavailable,
    Split,
    parse_runtime_value,
)
from tools.ports import free_port


class EnvoyAdmin(ThreadingHTTPServer):
    """The part of Envoy's admin API that RouterAdmin uses, on a real loopback port: POST /runtime_modify
    with the values in the query string, GET /runtime?format=json. Records each request; answers
    `refuse_with` (a status) to every POST when it is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.runtime: dict[str, str] = {CANDIDATE_PERCENT_KEY: "0", SHADOW_PERCENT_KEY: "0"}
        self.refuse_with: int | None = None
        super().__init__(("127.0.0.1", 0), AdminHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class AdminHandler(BaseHTTPRequestHandler):
    server: EnvoyAdmin

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query))
        self.server.calls.append(("POST", url.path, params))
        if self.server.refuse_with:
            self._answer(self.server.refuse_with, "no admin layer\n")
            return
        self.server.runtime.update(params)
        self._answer(200, "OK\n")

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        self.server.calls.append(("GET", url.path, dict(parse_qsl(url.query))))
        entries = {key: {"final_value": value} for key, value in self.server.runtime.items()}
        self._answer(200, json.dumps({"entries": entries}))

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture()
def envoy() -> Iterator[EnvoyAdmin]:
    server = EnvoyAdmin()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def sent(envoy: EnvoyAdmin) -> list[tuple[str, str, dict[str, str]]]:
    """The admin requests made to `envoy`."""
    return envoy.calls


@pytest.mark.parametrize(
    ("candidate", "shadow"), [(-1, 0), (100.5, 0), (0, -0.01), (0, 101), (float("nan"), 0), (0, float("inf"))]
)
def test_a_percent_outside_0_to_100_is_refused_before_anything_is_sent(
    candidate: float, shadow: float, envoy: EnvoyAdmin, sent: list[Any]
) -> None:
    with pytest.raises(ValueError, match="from 0 to 100"):
        RouterAdmin(envoy.url).set_split(candidate, shadow)
    assert sent == []


def test_nothing_listening_raises_router_unavailable_naming_the_address() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RouterUnavailable, match=address):
        RouterAdmin(address, timeout=2).set_split(10)
    with pytest.raises(RouterUnavailable, match=address):
        RouterAdmin(address, timeout=2).split()


def test_an_answer_other_than_200_raises_router_unavailable_naming_the_url(envoy: EnvoyAdmin) -> None:
    envoy.refuse_with = 404
    with pytest.raises(RouterUnavailable, match=rf"POST {envoy.url}/runtime_modify\?\S+ answered 404: no admin layer"):
        RouterAdmin(f"{envoy.url}/").set_split(10)


def test_both_values_go_in_one_request_in_basis_points(envoy: EnvoyAdmin, sent: list[Any]) -> None:
    RouterAdmin(envoy.url).set_split(12.5)
    ((method, path, params),) = sent
    assert (method, path) == ("POST", "/runtime_modify")
    assert json.loads(params[CANDIDATE_PERCENT_KEY]) == {"numerator": 1250, "denominator": "TEN_THOUSAND"}
    assert json.loads(params[SHADOW_PERCENT_KEY])["numerator"] == 1250  # mirrors nothing: see below


@pytest.mark.parametrize(
    "split",
    [Split(0, 0), Split(10, 0), Split(0, 100), Split(10, 20), Split(0.5, 33.33), Split(99.99, 100), Split(50, 50)],
)
def test_the_split_reads_back_as_it_was_set(envoy: EnvoyAdmin, split: Split) -> None:
    admin = RouterAdmin(envoy.url)
    admin.set_split(split.candidate_percent, split.shadow_percent)
    assert admin.split() == split


def test_the_mirror_threshold_sits_above_the_candidates_share(envoy: EnvoyAdmin, sent: list[Any]) -> None:
    # Envoy takes both decisions from one random draw: draws below 10 % go to the candidate, so mirroring 20 %
    # of the other 90 % means mirroring the draws from 10 % up to 10 + 0.2 x 90 = 28 %.
    RouterAdmin(envoy.url).set_split(10, 20)
    assert json.loads(sent[0][2][SHADOW_PERCENT_KEY])["numerator"] == 2800


def test_all_traffic_on_the_candidate_reads_as_nothing_mirrored_and_reset_returns_to_production(
    envoy: EnvoyAdmin,
) -> None:
    admin = RouterAdmin(envoy.url)
    admin.set_split(100, 50)
    assert admin.split() == Split(100, 0)
    admin.reset()
    assert admin.split() == Split(0, 0)


def test_runtime_values_set_by_hand_read_as_envoy_reads_them() -> None:
    assert parse_runtime_value("k", "10") == 1000  # a bare integer is a percent
    assert parse_runtime_value("k", "250") == 10000
    assert parse_runtime_value("k", '{"numerator": 5, "denominator": "MILLION"}') == 0
    assert parse_runtime_value("k", '{"numerator": 500, "denominator": "MILLION"}') == 5
    with pytest.raises(ValueError, match="runtime key k holds 'half'"):
        parse_runtime_value("k", "half")

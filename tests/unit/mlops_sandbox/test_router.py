"""RouterAdmin without a router: what it refuses, what it sends, how it reads Envoy's runtime back."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from mlops_sandbox.router import (
    CANDIDATE_PERCENT_KEY,
    SHADOW_PERCENT_KEY,
    RouterAdmin,
    RouterUnavailable,
    Split,
    parse_runtime_value,
)
from tools.ports import free_port


class FakeResponse:
    def __init__(self, status_code: int, body: Any = None) -> None:
        self.status_code = status_code
        self.text = json.dumps(body)
        self._body = body

    def json(self) -> Any:
        return self._body


@pytest.fixture()
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, str]]]:
    """The admin requests made, each answered 200 with Envoy's runtime of the last values POSTed."""
    calls: list[tuple[str, str, dict[str, str]]] = []
    runtime: dict[str, str] = {CANDIDATE_PERCENT_KEY: "0", SHADOW_PERCENT_KEY: "0"}

    def request(method: str, url: str, params: dict[str, str], timeout: float) -> FakeResponse:
        calls.append((method, url, params))
        if method == "POST":
            runtime.update(params)
            return FakeResponse(200, "OK")
        return FakeResponse(200, {"entries": {key: {"final_value": value} for key, value in runtime.items()}})

    monkeypatch.setattr(requests, "request", request)
    return calls


@pytest.mark.parametrize(
    ("candidate", "shadow"), [(-1, 0), (100.5, 0), (0, -0.01), (0, 101), (float("nan"), 0), (0, float("inf"))]
)
def test_a_percent_outside_0_to_100_is_refused_before_anything_is_sent(
    candidate: float, shadow: float, sent: list[Any]
) -> None:
    with pytest.raises(ValueError, match="from 0 to 100"):
        RouterAdmin("http://127.0.0.1:8079").set_split(candidate, shadow)
    assert sent == []


def test_nothing_listening_raises_router_unavailable_naming_the_address() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RouterUnavailable, match=address):
        RouterAdmin(address, timeout=2).set_split(10)
    with pytest.raises(RouterUnavailable, match=address):
        RouterAdmin(address, timeout=2).split()


def test_an_answer_other_than_200_raises_router_unavailable_naming_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(requests, "request", lambda *args, **kwargs: FakeResponse(404, "no admin layer"))
    with pytest.raises(RouterUnavailable, match=r"POST http://router:8079/runtime_modify answered 404"):
        RouterAdmin("http://router:8079/").set_split(10)


def test_both_values_go_in_one_request_in_basis_points(sent: list[Any]) -> None:
    RouterAdmin("http://router:8079").set_split(12.5)
    ((method, url, params),) = sent
    assert (method, url) == ("POST", "http://router:8079/runtime_modify")
    assert json.loads(params[CANDIDATE_PERCENT_KEY]) == {"numerator": 1250, "denominator": "TEN_THOUSAND"}
    assert json.loads(params[SHADOW_PERCENT_KEY])["numerator"] == 1250  # mirrors nothing: see below


@pytest.mark.parametrize(
    "split",
    [Split(0, 0), Split(10, 0), Split(0, 100), Split(10, 20), Split(0.5, 33.33), Split(99.99, 100), Split(50, 50)],
)
def test_the_split_reads_back_as_it_was_set(sent: list[Any], split: Split) -> None:
    admin = RouterAdmin("http://router:8079")
    admin.set_split(split.candidate_percent, split.shadow_percent)
    assert admin.split() == split


def test_the_mirror_threshold_sits_above_the_candidates_share(sent: list[Any]) -> None:
    # Envoy takes both decisions from one random draw: draws below 10 % go to the candidate, so mirroring 20 %
    # of the other 90 % means mirroring the draws from 10 % up to 10 + 0.2 x 90 = 28 %.
    RouterAdmin("http://router:8079").set_split(10, 20)
    assert json.loads(sent[0][2][SHADOW_PERCENT_KEY])["numerator"] == 2800


def test_all_traffic_on_the_candidate_reads_as_nothing_mirrored_and_reset_returns_to_production(
    sent: list[Any],
) -> None:
    admin = RouterAdmin("http://router:8079")
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

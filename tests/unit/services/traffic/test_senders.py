"""Grading answers: outcome classes, which backend and version answered, and the predicted digits."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from services.traffic.senders import (
    RestSender,
    backend_of,
    digits_of,
    grpc_outcome,
    grpc_output,
    http_outcome,
    label_value,
    read_grpc_error,
    read_rest_answer,
)
from tools.ports import free_port


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "ok"), (204, "ok"), (400, "client_error"), (404, "client_error"), (429, "client_error")]
    + [(500, "server_error"), (503, "server_error"), (302, "server_error")],
)
def test_http_outcome(status: int, outcome: str) -> None:
    assert http_outcome(status) == outcome


@pytest.mark.parametrize(
    ("code", "answered", "outcome"),
    [
        ("OK", True, "ok"),
        ("INVALID_ARGUMENT", True, "client_error"),
        ("NOT_FOUND", False, "client_error"),
        ("RESOURCE_EXHAUSTED", True, "client_error"),
        ("INTERNAL", True, "server_error"),
        ("UNIMPLEMENTED", True, "server_error"),
        ("UNAVAILABLE", True, "server_error"),  # a proxy said so: its backend is down
        ("UNAVAILABLE", False, "transport_error"),  # connection refused: no one answered
        ("DEADLINE_EXCEEDED", False, "transport_error"),  # our own timeout
        ("DEADLINE_EXCEEDED", True, "server_error"),
    ],
)
def test_grpc_outcome(code: str, answered: bool, outcome: str) -> None:
    assert grpc_outcome(code, answered=answered) == outcome


def test_label_values_stay_bounded() -> None:
    assert label_value(None, missing="direct") == label_value("", missing="direct") == "direct"
    assert label_value("candidate", missing="direct") == "candidate"
    assert (
        label_value("x" * 41, missing="") == label_value("a b", missing="") == label_value("{}", missing="") == "other"
    )


def probabilities(digits: list[int]) -> list[float]:
    """A flat V2 output, float (len(digits) × 10): each row peaks at its digit."""
    rows = np.full((len(digits), 10), 0.01)
    rows[np.arange(len(digits)), digits] = 0.91
    return rows.ravel().tolist()


def v2_answer(digits: list[int], version: str | None = "3") -> bytes:
    output = {"name": "output-0", "shape": [len(digits), 10], "datatype": "FP64", "data": probabilities(digits)}
    return json.dumps({"model_name": "m", "model_version": version, "outputs": [output]}).encode()


def test_rest_answers() -> None:
    ok = read_rest_answer(200, v2_answer([7, 2]), "production", 0.01, 2)
    assert (ok.outcome, ok.backend, ok.model_version, ok.seconds) == ("ok", "production", "3", 0.01)
    assert ok.digits is not None and ok.digits.tolist() == [7, 2]
    assert read_rest_answer(200, v2_answer([7], version=None), "direct", 0.01, 1).model_version == ""
    wrong_count = read_rest_answer(200, v2_answer([7, 2, 1]), "direct", 0.01, 2)  # 3 predictions for 2 images
    assert (wrong_count.outcome, wrong_count.digits) == ("server_error", None)
    assert read_rest_answer(200, b"<html>", "direct", 0.01, 1).outcome == "server_error"
    refused = read_rest_answer(400, b'{"error": "bad shape"}', "candidate", 0.002, 1)
    assert (refused.outcome, refused.backend, refused.model_version) == ("client_error", "candidate", "")
    assert "bad shape" in refused.detail
    assert read_rest_answer(503, b"upstream connect error", "direct", 0.5, 1).outcome == "server_error"


def test_digits_need_one_prediction_per_image() -> None:
    assert digits_of(np.asarray(probabilities([3, 9])).reshape(2, 10), [2, 10], 2).tolist() == [3, 9]
    with pytest.raises(ValueError, match=r"10 values of shape \[1, 10\] for 2 images"):
        digits_of(np.zeros(10), [1, 10], 2)
    with pytest.raises(ValueError, match="shape"):
        digits_of(np.zeros(20), [2, 11], 2)


def test_backend_from_grpc_metadata() -> None:
    assert backend_of((("content-type", "application/grpc"), ("X-Sandbox-Backend", "candidate"))) == "candidate"
    assert backend_of((("x-sandbox-backend-bin", b"x"), ("x-sandbox-backend", b"production"))) == "production"
    assert backend_of(()) is None and backend_of(None) is None


class FakeRpcError:
    """What grpc raises for a failed call: its status and the metadata the other side sent, if any."""

    def __init__(self, code: str, initial: tuple[Any, ...] = (), trailing: tuple[Any, ...] = ()) -> None:
        self._code, self._initial, self._trailing = SimpleNamespace(name=code), initial, trailing

    def code(self) -> Any:
        return self._code

    def details(self) -> str:
        return "details"

    def initial_metadata(self) -> tuple[Any, ...]:
        return self._initial

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self._trailing


def test_grpc_errors() -> None:
    refused = read_grpc_error(FakeRpcError("UNAVAILABLE"), 0.001)
    assert (refused.outcome, refused.backend, refused.seconds) == ("transport_error", "unknown", None)
    proxy = read_grpc_error(FakeRpcError("UNAVAILABLE", trailing=(("x-sandbox-backend", "candidate"),)), 0.2)
    assert (proxy.outcome, proxy.backend, proxy.seconds) == ("server_error", "candidate", 0.2)
    invalid = read_grpc_error(FakeRpcError("INVALID_ARGUMENT", initial=(("x-sandbox-backend", "production"),)), 0.1)
    assert (invalid.outcome, invalid.backend, invalid.model_version) == ("client_error", "production", "")
    direct = read_grpc_error(FakeRpcError("INTERNAL", trailing=(("grpc-message", "boom"),)), 0.1)
    assert (direct.outcome, direct.backend) == ("server_error", "direct")


def test_grpc_output_raw_or_typed() -> None:
    values = np.asarray(probabilities([4]), dtype="<f4")
    raw = SimpleNamespace(outputs=[SimpleNamespace(datatype="FP32")], raw_output_contents=[values.tobytes()])
    assert digits_of(grpc_output(raw), [1, 10], 1).tolist() == [4]
    contents = SimpleNamespace(fp32_contents=[], fp64_contents=probabilities([6]))
    typed = SimpleNamespace(outputs=[SimpleNamespace(datatype="FP64", contents=contents)], raw_output_contents=[])
    assert digits_of(grpc_output(typed), [1, 10], 1).tolist() == [6]


@pytest.fixture()
def fake_router() -> Iterator[tuple[str, list[str | None]]]:
    """A V2 REST endpoint on loopback that answers 7 for every image, as the router's `candidate` backend;
    yields its URL and the x-sandbox-labels header of each request it got."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.headers.get("x-sandbox-labels"))
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = v2_answer([7] * request["inputs"][0]["shape"][0], version="12")
            self.send_response(200)
            self.send_header("x-sandbox-backend", "candidate")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v2/models/m/infer", seen
        httpd.shutdown()


def test_rest_sender_reads_the_backend_header_and_sends_the_labels(
    fake_router: tuple[str, list[str | None]],
) -> None:
    url, seen = fake_router
    sender = RestSender(url, timeout=5, connections=2)
    answer = sender(np.zeros((3, 1, 28, 28), dtype=np.float32), np.array([4, 0, 9]))
    sender.close()
    assert seen == ["4,0,9"]
    assert (answer.outcome, answer.backend, answer.model_version) == ("ok", "candidate", "12")
    assert answer.digits is not None and answer.digits.tolist() == [7, 7, 7]
    assert answer.seconds is not None and 0 < answer.seconds < 5


def test_rest_sender_counts_a_refused_connection_as_a_transport_error() -> None:
    sender = RestSender(f"http://127.0.0.1:{free_port()}/v2/models/m/infer", timeout=5, connections=1)
    answer = sender(np.zeros((1, 1, 28, 28), dtype=np.float32), np.array([3]))
    assert (answer.outcome, answer.backend, answer.model_version, answer.seconds) == (
        "transport_error",
        "unknown",
        "",
        None,
    )
    assert "ConnectionError" in answer.detail

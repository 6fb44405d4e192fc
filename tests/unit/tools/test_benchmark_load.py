"""The gRPC load generator (h2load) against a real gRPC server in this process: what it counts as answered and
as failed, since h2load itself sees only HTTP statuses and gRPC's failures come in the trailers."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
import pytest

from tools.benchmark import load

CLIENTS = 2


@contextmanager
def grpc_server(answer: Callable[[int, grpc.ServicerContext], bytes]) -> Iterator[tuple[str, Counter[str]]]:
    """A gRPC server on loopback whose ModelInfer answers call n (from 0) with `answer(n, context)`; yields its
    address and how many calls it answered ("ok") and failed ("failed")."""
    sent: Counter[str] = Counter()
    calls = itertools.count()
    lock = threading.Lock()

    def model_infer(request: bytes, context: grpc.ServicerContext) -> bytes:
        with lock:
            n = next(calls)
        try:
            body = answer(n, context)
        except Exception:
            with lock:
                sent["failed"] += 1
            raise
        with lock:
            sent["ok"] += 1
        return body

    service, method = load.GRPC_INFER.strip("/").split("/")
    handler = grpc.method_handlers_generic_handler(service, {method: grpc.unary_unary_rpc_method_handler(model_infer)})
    server = grpc.server(ThreadPoolExecutor(max_workers=4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", sent
    finally:
        server.stop(grace=None)


def test_h2load_is_installed() -> None:
    assert load.missing_load_generators() is None, f"{load.missing_load_generators()} (.ci/run installs them)"


def test_every_answer_counted_with_its_latency() -> None:
    with grpc_server(lambda n, context: b"a" * 40) as (target, sent):
        measured = load.grpc_infer(target, b"request", clients=CLIENTS, seconds=1, batch=4)
    assert measured.errors == 0
    assert measured.requests > 50, measured
    # The calls still in flight when h2load stops are answered but not logged: at most one per connection.
    assert sent["ok"] - 1 - CLIENTS <= measured.requests <= sent["ok"] - 1  # - 1: the probe call
    assert 0.9 <= measured.seconds <= 1.5
    assert 0 < measured.p50_ms <= measured.p99_ms < 1000
    assert measured.img_s == pytest.approx(4 * measured.req_s)
    assert measured.client_cpu_per_request_ms is not None and measured.client_cpu_per_request_ms > 0


def test_failed_calls_are_errors_not_answers() -> None:
    def every_third_fails(n: int, context: grpc.ServicerContext) -> bytes:
        if n % 3 == 2:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad tensor")
        return b"a" * 40

    with grpc_server(every_third_fails) as (target, sent):
        measured = load.grpc_infer(target, b"request", clients=CLIENTS, seconds=1, batch=1)
    assert sent["failed"] > 10
    assert sent["failed"] - CLIENTS <= measured.errors <= sent["failed"]
    assert sent["ok"] - 1 - CLIENTS <= measured.requests <= sent["ok"] - 1


def test_a_first_call_that_fails_stops_the_measurement() -> None:
    def not_found(n: int, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, "Model nope not found")
        raise AssertionError("abort raises")

    with grpc_server(not_found) as (target, _), pytest.raises(grpc.RpcError, match="Model nope not found"):
        load.grpc_infer(target, b"request", clients=CLIENTS, seconds=1, batch=1)


def test_answers_of_varying_length_are_refused() -> None:
    # The first answer (the probe) sets the length; longer ones after it add up to more answers than calls.
    with grpc_server(lambda n, context: b"a" * (40 if n == 0 else 80)) as (target, _):
        with pytest.raises(RuntimeError, match="not a whole number of 45-byte answers"):
            load.grpc_infer(target, b"request", clients=CLIENTS, seconds=1, batch=1)


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match="only sends traffic to loopback"):
        load.grpc_infer("10.0.0.1:8081", b"request", clients=1, seconds=1, batch=1)

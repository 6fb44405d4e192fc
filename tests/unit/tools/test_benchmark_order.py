"""The order in which the serving benchmark measures each case: the configs of a ratio one after the other."""

from __future__ import annotations

from tools.benchmark.load import Measurement, Target, measuring_order


def _never(batch: int, clients: int, seconds: float) -> Measurement:
    raise AssertionError("not measured here")


def test_each_ratio_is_measured_seconds_apart() -> None:
    made = [
        ("a", "call"),
        ("b", "REST"),
        ("g", "gRPC"),
        ("g", "REST"),
        ("f", "gRPC"),
        ("f", "REST"),
        ("e", "gRPC"),
        ("e", "REST binary"),
        ("e", "REST"),
        ("d", "gRPC"),
        ("d", "REST binary"),
        ("d", "REST"),
        ("c", "REST"),
    ]
    targets = [Target(config, config, protocol, _never) for config, protocol in made]
    order = [(t.config, t.protocol) for t in sorted(targets, key=measuring_order)]
    assert order == [
        ("c", "REST"),
        ("d", "REST"),
        ("d", "REST binary"),
        ("e", "REST"),
        ("e", "REST binary"),
        ("f", "REST"),
        ("g", "REST"),
        ("b", "REST"),
        ("d", "gRPC"),
        ("e", "gRPC"),
        ("f", "gRPC"),
        ("g", "gRPC"),
        ("a", "call"),
    ]

"""The traffic generator's settings: bounded, and never aimed at anything but the sandbox itself."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.traffic.settings import TrafficSettings, is_sandbox_host


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = TrafficSettings()
    assert (settings.protocol, settings.rate, settings.duration) == ("rest", 20.0, 600.0)
    assert (settings.images_per_request, settings.metrics_host_port) == (1, ("127.0.0.1", 8075))
    assert settings.infer_url == "http://127.0.0.1:8080/v2/models/pytorch_simplenn_mnist/infer"
    monkeypatch.setenv("SANDBOX_TRAFFIC_TARGET", "router:8081")
    monkeypatch.setenv("SANDBOX_TRAFFIC_PROTOCOL", "grpc")
    monkeypatch.setenv("SANDBOX_TRAFFIC_RATE", "40")
    monkeypatch.setenv("SANDBOX_TRAFFIC_DURATION_SECONDS", "5")
    monkeypatch.setenv("SANDBOX_MODEL_NAME", "other_model")
    monkeypatch.setenv("SANDBOX_MNIST_ROOT", "/data/mnist")
    settings = TrafficSettings()
    assert (settings.rate, settings.duration, settings.model.name) == (40.0, 5.0, "other_model")
    assert settings.infer_url == "grpc://router:8081 (other_model)"
    assert str(settings.mnist.root) == "/data/mnist"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SANDBOX_TRAFFIC_RATE", "0"),
        ("SANDBOX_TRAFFIC_RATE", "501"),
        ("SANDBOX_TRAFFIC_DURATION_SECONDS", "0"),
        ("SANDBOX_TRAFFIC_DURATION_SECONDS", "86401"),
        ("SANDBOX_TRAFFIC_IMAGES_PER_REQUEST", "0"),
        ("SANDBOX_TRAFFIC_IMAGES_PER_REQUEST", "65"),
        ("SANDBOX_TRAFFIC_CONCURRENCY", "0"),
        ("SANDBOX_TRAFFIC_TIMEOUT_SECONDS", "0"),
        ("SANDBOX_TRAFFIC_METRICS_ADDRESS", "127.0.0.1:70000"),
        ("SANDBOX_TRAFFIC_PROTOCOL", "http"),
    ],
)
def test_bounds(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable):
        TrafficSettings()


@pytest.mark.parametrize(
    ("target", "protocol", "host"),
    [
        ("http://example.com:8080", "rest", "example.com"),
        ("https://api.example.org", "rest", "api.example.org"),
        ("http://10.0.0.7:8080", "rest", "10.0.0.7"),
        ("http://134744072", "rest", "134744072"),  # 8.8.8.8 written as one number
        ("http://[2001:db8::1]:8080", "rest", "2001:db8::1"),
        ("router.example.com:8081", "grpc", "router.example.com"),
        ("192.168.1.2:8081", "grpc", "192.168.1.2"),
    ],
)
def test_refuses_any_host_outside_the_sandbox(target: str, protocol: str, host: str) -> None:
    with pytest.raises(ValidationError, match=f"points at '{host}'.*never load-tests someone else's server"):
        TrafficSettings(target=target, protocol=protocol)


@pytest.mark.parametrize(
    ("target", "protocol"),
    [
        ("http://127.0.0.1:8080", "rest"),
        ("http://127.3.2.1:8080/", "rest"),
        ("http://localhost:8080", "rest"),
        ("http://[::1]:8080", "rest"),
        ("http://router:8080", "rest"),
        ("http://2130706433:8080", "rest"),  # 127.0.0.1 written as one number
        ("serving-staging:8091", "grpc"),
        ("127.0.0.1:8081", "grpc"),
    ],
)
def test_accepts_loopback_and_compose_service_names(target: str, protocol: str) -> None:
    assert TrafficSettings(target=target, protocol=protocol).target == target.rstrip("/")


@pytest.mark.parametrize(
    ("target", "protocol", "message"),
    [
        ("127.0.0.1:8080", "rest", "REST needs http://host:port"),
        ("http://127.0.0.1:8080/v2/models/x/infer", "rest", "REST needs http://host:port"),
        ("grpc://127.0.0.1:8081", "grpc", "gRPC needs host:port"),
        ("127.0.0.1", "grpc", "gRPC needs host:port"),
        ("127.0.0.1:port", "grpc", "gRPC needs host:port"),
    ],
)
def test_target_must_match_the_protocol(target: str, protocol: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrafficSettings(target=target, protocol=protocol)


def test_sandbox_hosts() -> None:
    assert is_sandbox_host("localhost") and is_sandbox_host("router") and is_sandbox_host("0x7f000001")
    assert not is_sandbox_host("1") and not is_sandbox_host("localhost.example") and not is_sandbox_host("")

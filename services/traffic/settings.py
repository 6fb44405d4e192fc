"""Settings of the traffic generator: where it sends, how fast, for how long, and where its metrics are."""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator

from mlops_sandbox.settings import (
    PER_PROCESS,
    MnistSettings,
    ModelReference,
    SandboxSettings,
    composed,
    split_host_port,
)

# A compose service name as Docker's DNS resolves it on the project's network: one label, no dots.
SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def _as_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        # Resolvers read "2130706433" or "0x7f.1" as IPv4 addresses too: judge them by the address they mean.
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def is_sandbox_host(host: str) -> bool:
    """Whether `host` is loopback (127.0.0.0/8, ::1, localhost) or a bare compose service name (no dots)."""
    ip = _as_ip(host)
    if ip is not None:
        return ip.is_loopback
    return host == "localhost" or SERVICE_NAME.fullmatch(host) is not None


class TrafficSettings(SandboxSettings):
    """One run of the traffic generator: a V2 endpoint (or the router in front of two), a rate, a duration.

    It only sends to loopback or to a compose service name, so the sandbox never load-tests a third party:
    any other host is refused (ValidationError naming the host).
    """

    target: str = Field("http://127.0.0.1:8080", validation_alias="SANDBOX_TRAFFIC_TARGET")
    """Where requests go: `http://host:port` for REST, `host:port` for gRPC. The host must be loopback or a
    compose service name without dots (`router`, `serving`)."""
    protocol: Literal["rest", "grpc"] = Field("rest", validation_alias="SANDBOX_TRAFFIC_PROTOCOL")
    """V2 over `rest` or `grpc`."""
    rate: float = Field(20.0, gt=0, le=500, validation_alias="SANDBOX_TRAFFIC_RATE")
    """Requests sent per second, on a fixed schedule whatever the server's speed (requests/s, at most 500)."""
    duration: float = Field(600.0, gt=0, le=86_400, validation_alias="SANDBOX_TRAFFIC_DURATION_SECONDS")
    """How long it sends before it exits (seconds, at most 86,400: one day)."""
    images_per_request: int = Field(1, ge=1, le=64, validation_alias="SANDBOX_TRAFFIC_IMAGES_PER_REQUEST")
    """MNIST images in each request (a batch of N: input shape (N, 1, 28, 28))."""
    concurrency: int = Field(32, ge=1, le=256, validation_alias="SANDBOX_TRAFFIC_CONCURRENCY")
    """Requests in flight at most (threads). A request due while this many wait for their answers is not
    sent, and counts as skipped: the schedule never slows down to the server's pace."""
    timeout: float = Field(5.0, gt=0, le=120, validation_alias="SANDBOX_TRAFFIC_TIMEOUT_SECONDS")
    """How long one request waits for its answer before it counts as a transport error (seconds)."""
    wait_seconds: float = Field(60.0, ge=0, le=3600, validation_alias="SANDBOX_TRAFFIC_WAIT_SECONDS")
    """How long it waits for the target to answer ready before the first request (seconds; 0: no wait)."""
    seed: int = Field(0, ge=0, validation_alias="SANDBOX_TRAFFIC_SEED")
    """Seed of the order in which the 10,000 test images are sent (cycled): the same seed, the same traffic."""
    metrics_address: str = Field(
        "127.0.0.1:8075", validation_alias="SANDBOX_TRAFFIC_METRICS_ADDRESS", json_schema_extra=PER_PROCESS
    )
    """host:port of the generator's Prometheus /metrics (sandbox_traffic_*); 0.0.0.0:8075 in a container that
    Prometheus scrapes."""
    summary_json: Path | None = Field(None, validation_alias="SANDBOX_TRAFFIC_SUMMARY_JSON")
    """Where to write the totals per backend and model version at the end (JSON); unset: nowhere."""
    model: ModelReference = composed(ModelReference, "SANDBOX_TRAFFIC_MODEL")
    """Which model the requests name: SANDBOX_MODEL_NAME (the reference is not used)."""
    mnist: MnistSettings = composed(MnistSettings, "SANDBOX_TRAFFIC_MNIST")
    """Where the test images come from: SANDBOX_MNIST_ROOT."""

    @property
    def host(self) -> str:
        """The target's host name or address, lower case, without brackets."""
        parsed = urlparse(self.target if self.protocol == "rest" else f"//{self.target}")
        return parsed.hostname or ""

    @property
    def infer_url(self) -> str:
        """Where requests go, as a user would write it: the REST inference URL, or grpc://host:port (model)."""
        if self.protocol == "grpc":
            return f"grpc://{self.target} ({self.model.name})"
        return f"{self.target}/v2/models/{self.model.name}/infer"

    @field_validator("target")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _check_target(self) -> TrafficSettings:
        if self.protocol == "rest":
            parsed = urlparse(self.target)
            if parsed.scheme not in ("http", "https") or parsed.path or parsed.query or parsed.fragment:
                raise ValueError(f"SANDBOX_TRAFFIC_TARGET={self.target!r}: REST needs http://host:port")
        else:
            parsed = urlparse(f"//{self.target}")
            if "://" in self.target or parsed.path or _port(self.target) is None:
                raise ValueError(f"SANDBOX_TRAFFIC_TARGET={self.target!r}: gRPC needs host:port, without a scheme")
        if not is_sandbox_host(self.host):
            raise ValueError(
                f"SANDBOX_TRAFFIC_TARGET={self.target!r} points at {self.host!r}: the traffic generator only sends "
                "to loopback (127.0.0.0/8, ::1, localhost) or to a compose service name without dots (router, "
                "serving), so that the sandbox never load-tests someone else's server"
            )
        return self

    @property
    def metrics_host_port(self) -> tuple[str, int]:
        """metrics_address as (host, port)."""
        return split_host_port(self.metrics_address)

    @field_validator("metrics_address")
    @classmethod
    def _check_metrics_address(cls, value: str) -> str:
        split_host_port(value)
        return value


def _port(address: str) -> int | None:
    try:
        return urlparse(f"//{address}").port
    except ValueError:  # not a number, or out of range
        return None

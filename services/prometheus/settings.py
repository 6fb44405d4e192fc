"""Settings of the metrics server (Prometheus): where it listens, what it scrapes, how often."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from mlops_sandbox.settings import PER_PROCESS, SandboxSettings, split_host_port

Targets = Annotated[list[str], NoDecode]
"""`host:port,host:port` in the environment (not JSON), a list in Python."""


class PrometheusSettings(SandboxSettings):
    """One Prometheus server scraping every part of a rollout: serving, router, traffic, rollout controller.

    Targets are `host:port` lists, comma-separated; an empty list leaves that job out. In compose, the names
    are service names, resolved by DNS at every scrape (Prometheus's `dns_sd_configs`), so that each replica
    of `docker compose up --scale serving=N` is scraped on its own.
    """

    address: str = Field("127.0.0.1:9090", validation_alias="SANDBOX_PROMETHEUS_ADDRESS", json_schema_extra=PER_PROCESS)
    """host:port of Prometheus's UI and query API."""
    data_dir: Path = Field(
        Path("prometheus-data"), validation_alias="SANDBOX_PROMETHEUS_DATA_DIR", json_schema_extra=PER_PROCESS
    )
    """Where Prometheus keeps its time series (and where its rendered configuration is written)."""
    retention: str = Field("2d", pattern=r"^\d+[smhdwy]$", validation_alias="SANDBOX_PROMETHEUS_RETENTION")
    """How long samples are kept (Prometheus's --storage.tsdb.retention.time). A sandbox needs days, not weeks."""
    scrape_interval_seconds: float = Field(2.0, ge=0.5, le=60, validation_alias="SANDBOX_PROMETHEUS_SCRAPE_SECONDS")
    """Seconds between two scrapes of each target, and between two evaluations of the recording rules.
    Prometheus's default of 60 s would give a 30 s rollout step no sample at all; 2 s gives it fifteen."""
    serving_targets: Targets = Field(
        ["127.0.0.1:8082", "127.0.0.1:8092"],
        validation_alias="SANDBOX_PROMETHEUS_SERVING",
        json_schema_extra=PER_PROCESS,
    )
    """The serving endpoints' metrics ports (MLServer's /metrics): production, then candidate."""
    router_targets: Targets = Field(
        ["127.0.0.1:8079"], validation_alias="SANDBOX_PROMETHEUS_ROUTER", json_schema_extra=PER_PROCESS
    )
    """Envoy's admin port (its metrics are at /stats/prometheus)."""
    traffic_targets: Targets = Field(
        ["127.0.0.1:8075", "127.0.0.1:8077"],
        validation_alias="SANDBOX_PROMETHEUS_TRAFFIC",
        json_schema_extra=PER_PROCESS,
    )
    """The traffic generators' metrics ports (a rehearsal runs one for REST, one for gRPC)."""
    rollout_targets: Targets = Field(
        ["127.0.0.1:8076"], validation_alias="SANDBOX_PROMETHEUS_ROLLOUT", json_schema_extra=PER_PROCESS
    )
    """The rollout controller's metrics port."""
    dns_discovery: bool = Field(
        False, validation_alias="SANDBOX_PROMETHEUS_DNS_DISCOVERY", json_schema_extra=PER_PROCESS
    )
    """Resolve each target's host by DNS at every scrape and scrape every address it has (compose, where a
    scaled service has one address per replica); off: scrape the targets as given."""

    @field_validator("serving_targets", "router_targets", "traffic_targets", "rollout_targets", mode="before")
    @classmethod
    def _split_targets(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for target in value:
                try:
                    split_host_port(str(target))
                except ValueError:
                    raise ValueError(f"{target!r} is not host:port") from None
        return value

"""Where a rollout acts: the router's admin and Prometheus, besides the endpoints and the tracking server."""

from __future__ import annotations

from pydantic import Field

from mlops_sandbox.settings import PER_PROCESS, SandboxSettings


class RolloutSettings(SandboxSettings):
    """The addresses the rollout command reaches; the thresholds are its options (`--help`)."""

    router_admin_url: str = Field("http://127.0.0.1:8079", validation_alias="SANDBOX_ROUTER_ADMIN_URL")
    """Envoy's admin API, where the rollout sets the candidate's share of traffic."""
    prometheus_url: str = Field("http://127.0.0.1:9090", validation_alias="SANDBOX_PROMETHEUS_URL")
    """Prometheus's query API, where the rollout reads each step's live metrics."""
    metrics_address: str = Field(
        "127.0.0.1:8076", validation_alias="SANDBOX_ROLLOUT_METRICS_ADDRESS", json_schema_extra=PER_PROCESS
    )
    """host:port where the controller serves its /metrics while it holds the router (Prometheus's `rollout` job)."""
    router_url: str = Field("http://127.0.0.1:8070", validation_alias="SANDBOX_ROUTER_URL")
    """The router's V2 REST endpoint, where a rehearsal's REST traffic goes."""
    router_grpc_target: str = Field("127.0.0.1:8071", validation_alias="SANDBOX_ROUTER_GRPC_TARGET")
    """The router's V2 gRPC endpoint (host:port), where a rehearsal's gRPC traffic goes."""
    rest_traffic_metrics: str = Field(
        "127.0.0.1:8075", validation_alias="SANDBOX_REHEARSAL_REST_TRAFFIC_METRICS", json_schema_extra=PER_PROCESS
    )
    """host:port of the /metrics of a rehearsal's REST traffic generator (scraped by Prometheus)."""
    grpc_traffic_metrics: str = Field(
        "127.0.0.1:8077", validation_alias="SANDBOX_REHEARSAL_GRPC_TRAFFIC_METRICS", json_schema_extra=PER_PROCESS
    )
    """host:port of the /metrics of a rehearsal's gRPC traffic generator."""

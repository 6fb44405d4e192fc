"""Settings of the traffic router (Envoy): where it listens, and the production and candidate endpoints it splits
traffic between."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from mlops_sandbox.settings import PER_PROCESS, SandboxSettings, split_host_port


class RouterSettings(SandboxSettings):
    """The router in front of the two serving endpoints: canary and shadow rollouts of a candidate version.

    Each upstream is `host:port`, resolved by DNS again every few seconds and balanced over every address
    it resolves to: in compose, `serving:8080` reaches every replica of `docker compose up --scale serving=N`.
    """

    rest_address: str = Field(
        "127.0.0.1:8070", validation_alias="SANDBOX_ROUTER_REST_ADDRESS", json_schema_extra=PER_PROCESS
    )
    """IP:port that V2 REST (HTTP/1.1 and HTTP/2) listens on, routed to the REST upstreams."""
    grpc_address: str = Field(
        "127.0.0.1:8071", validation_alias="SANDBOX_ROUTER_GRPC_ADDRESS", json_schema_extra=PER_PROCESS
    )
    """IP:port that V2 gRPC listens on, routed to the gRPC upstreams."""
    admin_address: str = Field(
        "127.0.0.1:8079", validation_alias="SANDBOX_ROUTER_ADMIN_ADDRESS", json_schema_extra=PER_PROCESS
    )
    """IP:port of Envoy's admin API: the split (POST /runtime_modify, GET /runtime), /ready, and
    /stats/prometheus, where Prometheus scrapes the router. The API changes the split and can stop Envoy, so
    it stays on loopback unless set."""
    production_rest: str = Field(
        "127.0.0.1:8080", validation_alias="SANDBOX_ROUTER_PRODUCTION_REST", json_schema_extra=PER_PROCESS
    )
    """host:port of production's V2 REST."""
    production_grpc: str = Field(
        "127.0.0.1:8081", validation_alias="SANDBOX_ROUTER_PRODUCTION_GRPC", json_schema_extra=PER_PROCESS
    )
    """host:port of production's V2 gRPC."""
    candidate_rest: str = Field(
        "127.0.0.1:8090", validation_alias="SANDBOX_ROUTER_CANDIDATE_REST", json_schema_extra=PER_PROCESS
    )
    """host:port of the candidate's V2 REST (the staging endpoint in the sandbox)."""
    candidate_grpc: str = Field(
        "127.0.0.1:8091", validation_alias="SANDBOX_ROUTER_CANDIDATE_GRPC", json_schema_extra=PER_PROCESS
    )
    """host:port of the candidate's V2 gRPC."""
    timeout_seconds: float = Field(60.0, ge=0.001, le=3600, validation_alias="SANDBOX_ROUTER_TIMEOUT_SECONDS")
    """How long the router waits for an upstream's whole answer before it answers 504 (seconds)."""
    config_dir: Path = Field(
        Path("router"), validation_alias="SANDBOX_ROUTER_CONFIG_DIR", json_schema_extra=PER_PROCESS
    )
    """Where the router writes the Envoy configuration it renders at start (envoy-<REST port>.json)."""

    @field_validator(
        "rest_address",
        "grpc_address",
        "admin_address",
        "production_rest",
        "production_grpc",
        "candidate_rest",
        "candidate_grpc",
    )
    @classmethod
    def _check_host_port(cls, value: str) -> str:
        split_host_port(value)
        return value.strip()

    @model_validator(mode="after")
    def _check_ports(self) -> RouterSettings:
        ports = [split_host_port(address)[1] for address in (self.rest_address, self.grpc_address, self.admin_address)]
        if len(set(ports)) < len(ports):
            raise ValueError(
                "the router's ports must differ: SANDBOX_ROUTER_REST_ADDRESS, SANDBOX_ROUTER_GRPC_ADDRESS and "
                f"SANDBOX_ROUTER_ADMIN_ADDRESS are {self.rest_address}, {self.grpc_address}, {self.admin_address}"
            )
        return self

    @property
    def config_path(self) -> Path:
        """The rendered configuration file; named by the REST port so two routers can share a folder."""
        return self.config_dir / f"envoy-{split_host_port(self.rest_address)[1]}.json"

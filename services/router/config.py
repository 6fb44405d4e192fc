"""The router's Envoy configuration (a v3 bootstrap), rendered from RouterSettings as plain data.

Two listeners, REST and gRPC, each with the same two routes, as in Envoy's "Traffic Shifting/Splitting":

1. matched by a runtime fraction (`sandbox.router.candidate_percent`) → the candidate;
2. everything else → production, mirroring a runtime fraction (`sandbox.router.shadow_percent`) of it to
   the candidate, whose answers Envoy discards.

Both fractions live in Envoy's runtime: a static layer holds 0 and 0, an admin layer above it takes
`POST /runtime_modify` (mlops_sandbox.router.RouterAdmin). A request sent after the admin API answered sees
the change, with no reload and no connection drained. The admin layer lives in memory only: a restarted router
forgets it and sends every request to production again, which is the safety property of the design. (A
file-based runtime layer or a dynamic configuration file would survive a restart, and with it a half-finished
rollout.)
"""

from __future__ import annotations

from typing import Any

from mlops_sandbox.router import BACKEND_HEADER, CANDIDATE_PERCENT_KEY, SHADOW_PERCENT_KEY
from mlops_sandbox.settings import split_host_port
from services.router.settings import RouterSettings

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HTTP_PROTOCOL_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
DOWNSTREAM_CONNECTIONS = (
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
# Below uvicorn's keep-alive (5 s), which MLServer's REST server uses: Envoy closes an idle upstream connection
# before the server does, so no request is sent on a connection the server is closing. With retries off, that
# race would reach the client as a 503.
REST_UPSTREAM_IDLE_TIMEOUT = "3s"
MAX_DOWNSTREAM_CONNECTIONS = 10_000


def socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def runtime_fraction(key: str) -> dict[str, Any]:
    """A fraction read from the runtime at each request; out of 10,000, so a split can be 0.01 % fine."""
    return {"runtime_key": key, "default_value": {"numerator": 0, "denominator": "TEN_THOUSAND"}}


def backend_header(backend: str) -> list[dict[str, Any]]:
    # Added to the answer's headers (gRPC: initial metadata), so clients can attribute every answer.
    return [{"header": {"key": BACKEND_HEADER, "value": backend}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]


def routes(protocol: str, timeout: str) -> list[dict[str, Any]]:
    """The candidate's route, then production's, which mirrors to the candidate."""
    candidate, production = f"candidate_{protocol}", f"production_{protocol}"
    # No retry_policy: Envoy retries nothing then, and a retry would hide a failing candidate behind production.
    return [
        {
            "name": "candidate",
            "match": {"prefix": "/", "runtime_fraction": runtime_fraction(CANDIDATE_PERCENT_KEY)},
            "route": {"cluster": candidate, "timeout": timeout},
            "response_headers_to_add": backend_header("candidate"),
        },
        {
            "name": "production",
            "match": {"prefix": "/"},
            "route": {
                "cluster": production,
                "timeout": timeout,
                # Fire and forget: the copy's answer is discarded and never delays production's. Envoy adds
                # "-shadow" to the copy's host name (Host, :authority), so the candidate can tell copies apart.
                "request_mirror_policies": [
                    {"cluster": candidate, "runtime_fraction": runtime_fraction(SHADOW_PERCENT_KEY)}
                ],
            },
            "response_headers_to_add": backend_header("production"),
        },
    ]


def listener(protocol: str, address: str, codec: str, timeout: str) -> dict[str, Any]:
    manager = {
        "@type": HCM,
        "stat_prefix": protocol,
        "codec_type": codec,
        # Answers keep the server header of the upstream that sent them, instead of "envoy".
        "server_header_transformation": "PASS_THROUGH",
        "route_config": {
            "name": protocol,
            "virtual_hosts": [{"name": protocol, "domains": ["*"], "routes": routes(protocol, timeout)}],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    return {
        "name": protocol,
        "address": socket_address(*split_host_port(address)),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }


def cluster(name: str, upstream: str, *, http2: bool) -> dict[str, Any]:
    protocol: dict[str, Any] = {"@type": HTTP_PROTOCOL_OPTIONS}
    if http2:
        protocol["explicit_http_config"] = {"http2_protocol_options": {}}
    else:
        protocol["explicit_http_config"] = {"http_protocol_options": {}}
        protocol["common_http_protocol_options"] = {"idle_timeout": REST_UPSTREAM_IDLE_TIMEOUT}
    return {
        "name": name,
        # Every address the name resolves to is an endpoint, resolved again every 5 s (Envoy's default): compose's
        # `--scale serving=N` puts N addresses behind one name.
        "type": "STRICT_DNS",
        # "localhost" resolves to ::1 first on some systems, where the servers listen on IPv4 only.
        "dns_lookup_family": "V4_PREFERRED",
        # Inference requests differ in cost (batch sizes): the replica with the fewest requests in flight gets
        # the next one, rather than the next in turn.
        "lb_policy": "LEAST_REQUEST",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(*split_host_port(upstream))}}]}],
        },
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": protocol},
    }


def bootstrap(settings: RouterSettings) -> dict[str, Any]:
    """Envoy's v3 bootstrap for `settings`, as the data of its JSON (or YAML) file."""
    timeout = f"{settings.timeout_seconds:g}s"
    return {
        "admin": {"address": socket_address(*split_host_port(settings.admin_address))},
        "layered_runtime": {
            "layers": [
                {"name": "defaults", "static_layer": {CANDIDATE_PERCENT_KEY: 0, SHADOW_PERCENT_KEY: 0}},
                {"name": "admin", "admin_layer": {}},
            ]
        },
        "static_resources": {
            "listeners": [
                listener("rest", settings.rest_address, "AUTO", timeout),
                listener("grpc", settings.grpc_address, "HTTP2", timeout),
            ],
            "clusters": [
                cluster("production_rest", settings.production_rest, http2=False),
                cluster("candidate_rest", settings.candidate_rest, http2=False),
                cluster("production_grpc", settings.production_grpc, http2=True),
                cluster("candidate_grpc", settings.candidate_grpc, http2=True),
            ],
        },
        # A bound on open client connections, so that a flood of them cannot exhaust Envoy's memory or file
        # descriptors (Envoy warns at start without one).
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": DOWNSTREAM_CONNECTIONS,
                        "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
                    },
                }
            ]
        },
    }

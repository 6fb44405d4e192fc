"""The rollout controller's own Prometheus metrics: what it routes and what it decided, scraped while it runs."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

from mlops_sandbox.settings import split_host_port

CANDIDATE_WEIGHT = Gauge(
    "sandbox_rollout_candidate_weight_percent",
    "The share of traffic the controller routes to the candidate version, in percent",
    ["model_version"],
)
STEP_VERDICTS = Counter(
    "sandbox_rollout_step_verdicts",
    "Judged rollout steps, by candidate version and verdict (passed, failed)",
    ["model_version", "verdict"],
)
SHADOW_PERCENT = Gauge(
    "sandbox_rollout_shadow_percent",
    "The share of production's traffic the controller mirrors to the candidate version (a shadow), in percent",
    ["model_version"],
)

_served: set[str] = set()


def serve(address: str) -> str | None:
    """Serve the metrics above at http://ADDRESS/metrics (ADDRESS is host:port) from a daemon thread, once per
    address and process. None when served; a one-line note saying why not when the port is taken (OSError), as
    it is when another controller runs: the rollout goes on without them."""
    if address in _served:
        return None
    host, port = split_host_port(address)
    try:
        start_http_server(port, addr=host)
    except OSError as err:
        return f"note: the controller's metrics are not served ({address}: {err})"
    _served.add(address)
    return None

"""What Prometheus measured for each backend of the router during one rollout step.

The source is the traffic generator's metrics (services/traffic): they carry the router's backend label
(from its x-sandbox-backend header), every outcome including refused connections, the latency clients saw,
and, because the generator knows each image's label, online accuracy. Windows are the step's own duration
for requests, errors and latency, so a step is judged on its own traffic; accuracy counts every labelled
answer since the rollout began, since a small share of traffic gives few labels per step.
"""

from __future__ import annotations

from infra.ops.rollout.analysis import BackendStats
from mlops_sandbox.prometheus import PrometheusQuery

REQUESTS = "sandbox_traffic_requests_total"
PREDICTIONS = "sandbox_traffic_predictions_total"
DURATION = "sandbox_traffic_request_duration_seconds_bucket"


def growth(series: str, by: str, seconds: int) -> str:
    """PromQL for how much the counters `series` grew over the last `seconds`, summed by the labels `by`.

    Not increase(): increase() only sees a series from its first sample, so the requests counted before a
    new series' first scrape (a version that just began to answer, its first error) would be missed, and a
    10 % step's few dozen requests would be judged on fewer still. Subtracting the sum `seconds` ago, or 0
    for a series that did not exist yet, counts every one of them.
    """
    now = f"sum by ({by}) ({series})"
    return f"({now} - (sum by ({by}) ({series} offset {max(1, seconds)}s) or {now} * 0))"


def step_queries(seconds: int, accuracy_seconds: int) -> dict[str, str]:
    """The PromQL of each figure, by backend: requests, errors and p99 over the last `seconds`, predictions
    over the last `accuracy_seconds` (whole seconds)."""
    return {
        "requests": growth(REQUESTS, "backend", seconds),
        "client_errors": growth(f'{REQUESTS}{{outcome="client_error"}}', "backend", seconds),
        "server_errors": growth(f'{REQUESTS}{{outcome=~"server_error|transport_error"}}', "backend", seconds),
        "p99_seconds": f"histogram_quantile(0.99, {growth(DURATION, 'backend, le', seconds)})",
        "correct": growth(f'{PREDICTIONS}{{correct="true"}}', "backend", accuracy_seconds),
        "labelled": growth(PREDICTIONS, "backend", accuracy_seconds),
    }


def step_stats(prometheus: PrometheusQuery, seconds: float, accuracy_seconds: float) -> dict[str, BackendStats]:
    """Each backend's BackendStats over the last `seconds` (predictions: `accuracy_seconds`), keyed by backend
    (production, candidate).

    Raises PrometheusUnavailable (mlops_sandbox.prometheus) when a query fails.
    """
    queries = step_queries(int(seconds), int(accuracy_seconds))
    figures = {name: prometheus.vector(q, by="backend") for name, q in queries.items()}
    backends = set(figures["requests"])
    return {
        backend: BackendStats(
            requests=figures["requests"].get(backend, 0.0),
            client_errors=figures["client_errors"].get(backend, 0.0),
            server_errors=figures["server_errors"].get(backend, 0.0),
            p99_seconds=figures["p99_seconds"].get(backend),
            correct=figures["correct"].get(backend, 0.0),
            labelled=figures["labelled"].get(backend, 0.0),
        )
        for backend in backends
    }

"""What Prometheus measured for each backend of the router during one rollout step (canary), or for each
version during a shadow.

The source is the traffic generator's metrics (services/traffic): they carry the router's backend label
(from its x-sandbox-backend header), every outcome including refused connections, the latency clients saw,
and, because the generator knows each image's label, online accuracy. Windows are the step's own duration
for requests, errors and latency, so a step is judged on its own traffic; accuracy counts every labelled
answer since the rollout began, since a small share of traffic gives few labels per step.

A shadow's copies reach no client, so a shadow is measured where both copies arrive: on the serving
endpoints' own counters (services/serving/metrics.py), by registry version, with the labels the traffic
carries (x-sandbox-labels), and on Envoy's latency per upstream cluster (milliseconds).
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
    10 % step's few dozen requests would be judged on fewer still. Each series' value minus its value
    `seconds` ago, or its whole value for a series that did not exist yet, counts every one of them.

    Series by series, then summed: a serving process that is replaced takes its series with it, and
    subtracting sums would take the old series' counts from the others' growth (a shadow's production
    measured 1.11 online accuracy, more right answers than labelled ones, in one CI run). A counter that
    restarted from 0 (a smaller value than before) counts from its restart.
    """
    before = f"{series} offset {max(1, seconds)}s"
    return f"sum by ({by}) ((({series} - {before}) >= 0) or {series})"


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


SERVED = "served_model_requests_total"
SERVED_FAILED = "served_model_failed_requests_total"
SERVED_LABELLED = "served_model_labelled_predictions_total"
CLUSTER_TIME = "envoy_cluster_upstream_rq_time_bucket"


def backend_p99_ms(seconds: int) -> str:
    """PromQL for the p99 of Envoy's upstream request time (milliseconds) over the last `seconds`, by backend.
    Envoy's clusters are named backend_protocol (production_rest, candidate_grpc: services/router/config.py);
    a mirrored copy's time counts in its cluster as any request's does."""
    by_cluster = growth(CLUSTER_TIME, "envoy_cluster_name, le", seconds)
    by_backend = f'label_replace({by_cluster}, "backend", "$1", "envoy_cluster_name", "(production|candidate)_.*")'
    return f"histogram_quantile(0.99, sum by (backend, le) ({by_backend}))"


def shadow_queries(version: str, seconds: int) -> dict[str, str]:
    """The PromQL of each figure of one version over the last `seconds`, from the serving endpoints' counters."""
    at = f'model_version="{version}"'
    return {
        "answered": growth(f"{SERVED}{{{at}}}", "model_version", seconds),
        "client_errors": growth(f'{SERVED_FAILED}{{{at},kind="client"}}', "model_version", seconds),
        "server_errors": growth(f'{SERVED_FAILED}{{{at},kind="server"}}', "model_version", seconds),
        "correct": growth(f'{SERVED_LABELLED}{{{at},correct="true"}}', "model_version", seconds),
        "labelled": growth(f"{SERVED_LABELLED}{{{at}}}", "model_version", seconds),
    }


def shadow_stats(
    prometheus: PrometheusQuery, versions: dict[str, str], seconds: float
) -> tuple[dict[str, BackendStats], dict[str, dict[str, float]]]:
    """Each backend's BackendStats over the last `seconds`, and the digits each predicted on labelled images
    (digit -> count), keyed by backend. `versions`: backend (production, candidate) -> the version it serves.

    Requests are what the runtime answered, refused or failed; latency is Envoy's time to the upstream's whole
    answer, mirrored copies included, per backend. Raises PrometheusUnavailable when a query fails.
    """
    window = int(seconds)
    p99_ms = prometheus.vector(backend_p99_ms(window), by="backend")
    stats, digits = {}, {}
    for backend, version in versions.items():
        figures = {
            name: sum(prometheus.vector(q, by="").values()) for name, q in shadow_queries(version, window).items()
        }
        errors = figures["client_errors"] + figures["server_errors"]
        p99 = p99_ms.get(backend)
        stats[backend] = BackendStats(
            requests=figures["answered"] + errors,
            client_errors=figures["client_errors"],
            server_errors=figures["server_errors"],
            p99_seconds=p99 / 1000 if p99 is not None else None,
            correct=figures["correct"],
            labelled=figures["labelled"],
        )
        digits[backend] = prometheus.vector(
            growth(f'{SERVED_LABELLED}{{model_version="{version}"}}', "digit", window), by="digit"
        )
    return stats, digits

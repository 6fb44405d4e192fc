"""The rollout's PromQL (infra/ops/rollout/metrics.py), evaluated by Prometheus's own engine (`promtool test
rules`) on series shaped like a canary's first step: the candidate's series are born inside the window."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.ops.rollout.metrics import backend_p99_ms, shadow_queries, step_queries

# Samples every 2 s from 0 s to 60 s; the step is the last 20 s (40 s to 60 s).
SERIES = {
    # Production: 10 answers per sample, 9 of them right; 100 answers in the step.
    'sandbox_traffic_requests_total{backend="production",outcome="ok"}': "0+10x30",
    'sandbox_traffic_predictions_total{backend="production",correct="true"}': "0+9x30",
    'sandbox_traffic_predictions_total{backend="production",correct="false"}': "0+1x30",
    # A second generator's counter restarts from 0 at 50 s (240 before): counted from its restart, 30.
    'sandbox_traffic_requests_total{backend="production",outcome="ok",instance="b"}': "0+10x24 5+5x5",
    # The candidate begins to answer at 50 s: 3 answers before its first scrape, 11 in all, 2 refusals.
    'sandbox_traffic_requests_total{backend="candidate",outcome="ok"}': "_x25 3 5 7 9 11",
    'sandbox_traffic_requests_total{backend="candidate",outcome="client_error"}': "_x28 1 2",
    'sandbox_traffic_predictions_total{backend="candidate",correct="true"}': "_x25 3 4 5 6 7",
    'sandbox_traffic_predictions_total{backend="candidate",correct="false"}': "_x26 1 2 3 4",
}
EXPECTED = {
    "requests": {"production": 130, "candidate": 13},
    "client_errors": {"candidate": 2},
    "correct": {"production": 90, "candidate": 7},
    "labelled": {"production": 100, "candidate": 11},
}


def promtool_test(folder: Path, series: dict[str, str], tests: list[dict[str, object]]) -> None:
    """Evaluate `tests` (promql_expr_test entries) on `series` sampled every 2 s, with Prometheus's engine."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: apt-get install prometheus")
    inputs = [{"series": name, "values": values} for name, values in series.items()]
    spec = {"tests": [{"interval": "2s", "input_series": inputs, "promql_expr_test": tests}]}
    (folder / "test.yml").write_text(yaml.safe_dump(spec))
    tested = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=folder, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_step_counts_every_request_including_those_before_a_new_series_first_scrape(tmp_path: Path) -> None:
    queries = step_queries(20, 20)
    tests: list[dict[str, object]] = [
        {
            "expr": queries[figure],
            "eval_time": "60s",
            "exp_samples": [{"labels": f'{{backend="{backend}"}}', "value": value} for backend, value in by.items()],
        }
        for figure, by in EXPECTED.items()
    ]
    promtool_test(tmp_path, SERIES, tests)


def test_a_shadow_counts_each_version_on_the_serving_counters_and_envoy_latency_by_backend(tmp_path: Path) -> None:
    """Version 9 (the candidate) is born at 50 s, when mirroring began; version 8 (production) answers throughout,
    and the series of another process that served it end at 42 s."""
    on = 'model_name="m",model_version'
    series = {
        f'served_model_requests_total{{{on}="8"}}': "0+10x30",
        f'served_model_labelled_predictions_total{{{on}="8",digit="3",correct="true"}}': "0+9x30",
        f'served_model_labelled_predictions_total{{{on}="8",digit="5",correct="false"}}': "0+1x30",
        f'served_model_requests_total{{{on}="9"}}': "_x25 4 8 12 16 20",
        f'served_model_failed_requests_total{{{on}="9",kind="client"}}': "_x28 1 2",
        f'served_model_labelled_predictions_total{{{on}="9",digit="3",correct="true"}}': "_x25 3 6 9 12 15",
        f'served_model_labelled_predictions_total{{{on}="9",digit="5",correct="false"}}': "_x25 1 2 3 4 5",
        # The staging endpoint's process served version 8 until 40 s, then was replaced: its series end.
        f'served_model_requests_total{{{on}="8",instance="staging"}}': "0+5x20 stale",
        f'served_model_labelled_predictions_total{{{on}="8",digit="3",correct="true",instance="staging"}}': (
            "0+4x20 stale"
        ),
        f'served_model_labelled_predictions_total{{{on}="8",digit="5",correct="false",instance="staging"}}': (
            "0+1x20 stale"
        ),
        # Envoy: every production answer within 5 ms, every candidate answer between 25 and 50 ms.
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="production_rest",le="5"}': "0+10x30",
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="production_rest",le="+Inf"}': "0+10x30",
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="candidate_grpc",le="25"}': "0x30",
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="candidate_grpc",le="50"}': "_x25 4 8 12 16 20",
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="candidate_grpc",le="+Inf"}': "_x25 4 8 12 16 20",
    }
    expected = {
        "8": {"answered": 100, "correct": 90, "labelled": 100},
        "9": {"answered": 20, "client_errors": 2, "correct": 15, "labelled": 20},
    }
    tests: list[dict[str, object]] = [
        {
            "expr": shadow_queries(version, 20)[figure],
            "eval_time": "60s",
            "exp_samples": [{"labels": f'{{model_version="{version}"}}', "value": value}],
        }
        for version, figures in expected.items()
        for figure, value in figures.items()
    ]
    tests.append(
        {
            "expr": backend_p99_ms(20),
            "eval_time": "60s",
            # Prometheus interpolates within a bucket: 0.99 of (0, 5] and of (25, 50].
            "exp_samples": [
                {"labels": '{backend="production"}', "value": 4.95},
                {"labels": '{backend="candidate"}', "value": 49.75},
            ],
        }
    )
    promtool_test(tmp_path, series, tests)

"""The rollout's PromQL (infra/ops/rollout/metrics.py), evaluated by Prometheus's own engine (`promtool test
rules`) on series shaped like a canary's first step: the candidate's series are born inside the window."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.ops.rollout.metrics import step_queries

# Samples every 2 s from 0 s to 60 s; the step is the last 20 s (40 s to 60 s).
SERIES = {
    # Production: 10 answers per sample, 9 of them right; 100 answers in the step.
    'sandbox_traffic_requests_total{backend="production",outcome="ok"}': "0+10x30",
    'sandbox_traffic_predictions_total{backend="production",correct="true"}': "0+9x30",
    'sandbox_traffic_predictions_total{backend="production",correct="false"}': "0+1x30",
    # The candidate begins to answer at 50 s: 3 answers before its first scrape, 11 in all, 2 refusals.
    'sandbox_traffic_requests_total{backend="candidate",outcome="ok"}': "_x25 3 5 7 9 11",
    'sandbox_traffic_requests_total{backend="candidate",outcome="client_error"}': "_x28 1 2",
    'sandbox_traffic_predictions_total{backend="candidate",correct="true"}': "_x25 3 4 5 6 7",
    'sandbox_traffic_predictions_total{backend="candidate",correct="false"}': "_x26 1 2 3 4",
}
EXPECTED = {
    "requests": {"production": 100, "candidate": 13},
    "client_errors": {"candidate": 2},
    "correct": {"production": 90, "candidate": 7},
    "labelled": {"production": 100, "candidate": 11},
}


def test_a_step_counts_every_request_including_those_before_a_new_series_first_scrape(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: apt-get install prometheus")
    queries = step_queries(20, 20)
    tests = [
        {
            "expr": queries[figure],
            "eval_time": "60s",
            "exp_samples": [{"labels": f'{{backend="{backend}"}}', "value": value} for backend, value in by.items()],
        }
        for figure, by in EXPECTED.items()
    ]
    spec = {
        "tests": [
            {
                "interval": "2s",
                "input_series": [{"series": series, "values": values} for series, values in SERIES.items()],
                "promql_expr_test": tests,
            }
        ]
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(spec))
    tested = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr

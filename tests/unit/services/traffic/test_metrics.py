"""The generator's Prometheus metrics and summary: names, labels, and correct predictions counted per image."""

from __future__ import annotations

import numpy as np
from prometheus_client import generate_latest

from services.traffic.generator import ScheduleResult
from services.traffic.metrics import Recorder, summary_line
from services.traffic.senders import Answer

PRODUCTION = {"protocol": "rest", "backend": "production", "model_version": "3"}
CANDIDATE = {"protocol": "rest", "backend": "candidate", "model_version": "4"}


def recorded() -> Recorder:
    recorder = Recorder("rest")
    truth = np.array([1, 2, 3, 4])
    recorder.record(Answer("ok", "production", "3", digits=np.array([1, 2, 3, 4]), seconds=0.004), truth)
    recorder.record(Answer("ok", "candidate", "4", digits=np.array([1, 2, 0, 0]), seconds=0.012), truth)
    recorder.record(Answer("server_error", "candidate", "", seconds=0.3, detail="HTTP 500: boom"), truth)
    recorder.record(Answer("transport_error", "unknown", "", detail="ConnectionError: refused"), truth)
    recorder.skip()
    return recorder


def test_metrics_names_and_labels() -> None:
    recorder = recorded()
    value = recorder.registry.get_sample_value
    assert value("sandbox_traffic_requests_total", {**PRODUCTION, "outcome": "ok"}) == 1
    assert value("sandbox_traffic_requests_total", {**CANDIDATE, "outcome": "ok"}) == 1
    errors = {"protocol": "rest", "backend": "candidate", "model_version": "", "outcome": "server_error"}
    assert value("sandbox_traffic_requests_total", errors) == 1
    nothing = {"protocol": "rest", "backend": "unknown", "model_version": "", "outcome": "transport_error"}
    assert value("sandbox_traffic_requests_total", nothing) == 1
    # Per image: 4 of 4 right on production, 2 of 4 on the candidate; failed requests predict nothing.
    assert value("sandbox_traffic_predictions_total", {**PRODUCTION, "correct": "true"}) == 4
    assert value("sandbox_traffic_predictions_total", {**PRODUCTION, "correct": "false"}) == 0
    assert value("sandbox_traffic_predictions_total", {**CANDIDATE, "correct": "true"}) == 2
    assert value("sandbox_traffic_predictions_total", {**CANDIDATE, "correct": "false"}) == 2
    assert value("sandbox_traffic_request_duration_seconds_count", PRODUCTION) == 1
    assert value("sandbox_traffic_request_duration_seconds_bucket", {**PRODUCTION, "le": "0.005"}) == 1
    assert value("sandbox_traffic_request_duration_seconds_bucket", {**CANDIDATE, "le": "0.01"}) == 0
    assert value("sandbox_traffic_request_duration_seconds_count", {**CANDIDATE, "model_version": ""}) == 1
    unanswered = {"protocol": "rest", "backend": "unknown", "model_version": ""}
    assert value("sandbox_traffic_request_duration_seconds_count", unanswered) is None, "no answer, no duration"
    assert value("sandbox_traffic_skipped_total") == 1
    exposition = generate_latest(recorder.registry).decode()
    assert "# TYPE sandbox_traffic_request_duration_seconds histogram" in exposition


def test_summary() -> None:
    recorder = recorded()
    summary = recorder.summary(ScheduleResult(6, 4, 1, 2.0, False), target="http://127.0.0.1:8080/x")
    assert summary["outcomes"] == {"ok": 2, "client_error": 0, "server_error": 1, "transport_error": 1}
    by_backend = {(entry["backend"], entry["model_version"]): entry for entry in summary["backends"]}
    assert by_backend[("production", "3")]["accuracy"] == 1.0
    assert by_backend[("candidate", "4")]["accuracy"] == 0.5 and by_backend[("candidate", "4")]["images"] == 4
    assert by_backend[("candidate", "")]["requests"]["server_error"] == 1
    assert by_backend[("unknown", "")]["accuracy"] is None
    assert recorder.first_errors == {"server_error": "HTTP 500: boom", "transport_error": "ConnectionError: refused"}
    line = summary_line(summary)
    assert line.startswith("traffic: 4 of 6 requests sent in 2.0 s (2.0/s) to http://127.0.0.1:8080/x: ok 2,")
    assert "skipped 1" in line and "candidate v4: accuracy 0.5000 on 4 images" in line

"""The Grafana dashboard and its provisioning, read as Grafana reads them (no Grafana runs here).

tests/e2e/test_rollouts.py runs every panel's query against the real Prometheus during a rollout; these
checks need no server: the JSON, the datasource it names, and the series its queries read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from infra.ops.rollout.telemetry import CANDIDATE_WEIGHT
from services.prometheus.config import RULES

GRAFANA = Path(__file__).resolve().parents[4] / "services" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "rollouts.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "sandbox.yml"
RULES_TEST = Path(__file__).resolve().parents[1] / "prometheus" / "rules_test.yml"
# The label a panel's series are told apart by, as its legend names it: a version, a router backend, or an
# Envoy cluster.
KEYS = {"model_version", "backend", "envoy_cluster_name"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def targets() -> list[dict[str, Any]]:
    return [target for panel in dashboard()["panels"] for target in panel["targets"]]


def test_the_dashboard_is_one_grafana_provisions_with_a_fixed_uid() -> None:
    board = dashboard()
    assert board["uid"] == "sandbox-rollouts" and board["title"]
    assert board["id"] is None, "a provisioned dashboard leaves its id to Grafana"
    # Grafana 12's schema; Grafana migrates an older one on load, but the file should not need it.
    assert board["schemaVersion"] >= 41
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "two panels share an id"


def test_every_panel_queries_the_provisioned_prometheus() -> None:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["uid"]
    expected = {"type": "prometheus", "uid": datasource["uid"]}
    for panel in dashboard()["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"] == expected, panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
            assert target["expr"].strip(), f"panel {panel['title']!r} has an empty query"


def test_every_query_runs_as_written_and_names_the_label_its_legend_shows() -> None:
    for target in targets():
        # No Grafana variable ($__rate_interval, $version, ...): the end-to-end test sends each query to
        # Prometheus as it is written, and the panels get exactly what it checked.
        assert "$" not in target["expr"], target["expr"]
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"]))
        assert len(legend & KEYS) == 1, f"{target['expr']}: the legend names none of {sorted(KEYS)}"


def test_the_queries_read_recorded_series_that_rules_yml_records_and_the_controllers_gauge() -> None:
    recorded = {rule["record"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    read = set()
    for target in targets():
        names = set(re.findall(r"[a-z_]+:[a-z_0-9]+:[a-z_0-9]+", target["expr"]))
        assert names <= recorded, f"{target['expr']}: rules.yml records no {names - recorded}"
        read |= names
    weight = CANDIDATE_WEIGHT._name  # prometheus_client's own name for the gauge
    assert any(weight in target["expr"] for target in targets()), "no panel shows the rollout weight"
    # Share, 4xx and 5xx (per backend, and per version as serving counts them), requests, latency and accuracy
    # per version, each from its recording rule.
    assert {
        "backend:sandbox_traffic_share:ratio_rate1m",
        "backend:sandbox_traffic_client_errors:ratio_rate1m",
        "backend:sandbox_traffic_server_errors:ratio_rate1m",
        "version:served_model_client_errors:ratio_rate1m",
        "version:served_model_server_errors:ratio_rate1m",
        "version:sandbox_traffic_request_duration_seconds:p50_rate1m",
        "version:sandbox_traffic_request_duration_seconds:p99_rate1m",
        "version:sandbox_traffic_accuracy:ratio_rate1m",
    } <= read


def test_every_query_that_is_more_than_one_recorded_series_has_a_promtool_unit_test() -> None:
    # promtool evaluates them in rules_test.yml on a canary whose candidate fails: there the error panels show
    # the failures, which a good rollout (the end-to-end test) never has.
    tested = {
        test["expr"] for case in yaml.safe_load(RULES_TEST.read_text())["tests"] for test in case["promql_expr_test"]
    }
    for target in targets():
        if not re.fullmatch(r"[a-z_]+:[a-z_0-9]+:[a-z_0-9]+", target["expr"]):
            assert target["expr"] in tested, f"rules_test.yml does not test {target['expr']!r}"


def test_the_provider_reads_the_folder_the_dashboard_is_mounted_in() -> None:
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False
    assert provider["options"]["path"] == "/etc/grafana/dashboards"

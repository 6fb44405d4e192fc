"""Prometheus's configuration for the sandbox, rendered from PrometheusSettings.

Four scrape jobs, one per kind of target: `serving` (MLServer's /metrics, with this project's per-version
counter), `router` (Envoy's /stats/prometheus), `traffic` (the generator that knows the labels) and
`rollout` (the controller's weight and verdicts). The recording rules are rules.yml beside this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops_sandbox.settings import split_host_port
from services.prometheus.settings import PrometheusSettings

RULES = Path(__file__).with_name("rules.yml")

METRICS_PATHS = {"serving": "/metrics", "router": "/stats/prometheus", "traffic": "/metrics", "rollout": "/metrics"}
"""Where each job's targets answer; Envoy's admin keeps Prometheus's format apart from its own /stats."""


def _targets(targets: list[str], *, dns: bool) -> dict[str, Any]:
    if not dns:
        return {"static_configs": [{"targets": targets}]}
    # One DNS name per port, as Prometheus's dns_sd_configs takes them: each A record is a target.
    by_port: dict[int, list[str]] = {}
    for target in targets:
        host, port = split_host_port(target)
        by_port.setdefault(port, []).append(host)
    return {
        "dns_sd_configs": [
            {"names": names, "type": "A", "port": port, "refresh_interval": "5s"} for port, names in by_port.items()
        ]
    }


def render(settings: PrometheusSettings, rules: Path = RULES) -> dict[str, Any]:
    """The content of prometheus.yml: global intervals, the rule file, and one scrape job per kind of target."""
    interval = f"{settings.scrape_interval_seconds:g}s"
    jobs = {
        "serving": settings.serving_targets,
        "router": settings.router_targets,
        "traffic": settings.traffic_targets,
        "rollout": settings.rollout_targets,
    }
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": METRICS_PATHS[job],
                **_targets(targets, dns=settings.dns_discovery),
            }
            for job, targets in jobs.items()
            if targets
        ],
    }

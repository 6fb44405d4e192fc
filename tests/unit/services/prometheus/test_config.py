"""Prometheus's rendered configuration and recording rules, checked by Prometheus's own `promtool`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services.prometheus.config import COMPOSE_CONFIG, RULES, render, render_compose
from services.prometheus.settings import PrometheusSettings


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run Prometheus's own checker; it comes with Debian's prometheus package, which .ci/run installs."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: apt-get install prometheus")
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize("dns", [False, True])
def test_the_rendered_configuration_is_one_prometheus_accepts(tmp_path: Path, dns: bool) -> None:
    settings = PrometheusSettings(
        serving_targets=["serving:8082", "serving-staging:8082"], dns_discovery=dns, scrape_interval_seconds=2
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(render(settings)))
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    jobs = {job["job_name"]: job for job in render(settings)["scrape_configs"]}
    assert set(jobs) == {"serving", "router", "traffic", "rollout"}
    assert jobs["router"]["metrics_path"] == "/stats/prometheus"
    if dns:
        assert jobs["serving"]["dns_sd_configs"] == [
            {"names": ["serving", "serving-staging"], "type": "A", "port": 8082, "refresh_interval": "5s"}
        ]
    else:
        assert jobs["serving"]["static_configs"] == [{"targets": ["serving:8082", "serving-staging:8082"]}]


def test_the_recording_rules_give_share_errors_latency_and_accuracy_per_version() -> None:
    # The expected values are in rules_test.yml: a 10 % canary whose candidate refuses a quarter of its requests.
    here = Path(__file__).parent
    tested = promtool("test", "rules", "rules_test.yml", cwd=here)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "../../../../services/prometheus/rules.yml" in (here / "rules_test.yml").read_text()
    assert (here / "../../../../services/prometheus/rules.yml").resolve() == RULES


def test_composes_configuration_is_the_current_rendering_and_one_prometheus_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The compose rendering ignores this process's variables: the committed file cannot depend on a shell.
    monkeypatch.setenv("SANDBOX_PROMETHEUS_SCRAPE_SECONDS", "30")
    assert COMPOSE_CONFIG.read_text() == render_compose(), "run python -m services.prometheus.config and commit"
    # promtool resolves the rule file from the configuration's folder, as Prometheus does in the container.
    checked = promtool("check", "config", str(COMPOSE_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(COMPOSE_CONFIG.read_text())
    assert config["rule_files"] == [RULES.name]
    jobs = {
        job["job_name"]: [name for sd in job["dns_sd_configs"] for name in sd["names"]]
        for job in config["scrape_configs"]
    }
    # Every replica of each service, by compose's DNS; a rollout's controller and traffic run in the cli container.
    assert jobs == {
        "serving": ["serving", "serving-staging"],
        "router": ["router"],
        "traffic": ["cli", "cli"],
        "rollout": ["cli"],
    }


def test_targets_come_from_the_environment_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_PROMETHEUS_SERVING", "127.0.0.1:8082, 127.0.0.1:8092")
    monkeypatch.setenv("SANDBOX_PROMETHEUS_TRAFFIC", "")
    settings = PrometheusSettings()
    assert settings.serving_targets == ["127.0.0.1:8082", "127.0.0.1:8092"]
    assert settings.traffic_targets == ["127.0.0.1:8075", "127.0.0.1:8077"]  # empty means unset, as everywhere


def test_a_target_without_a_port_is_refused_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_PROMETHEUS_ROUTER", "envoy")
    with pytest.raises(ValidationError, match="'envoy' is not host:port"):
        PrometheusSettings()

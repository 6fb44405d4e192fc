"""The sandbox as local processes, no Docker: the same entrypoints and variables as compose.

    python -m infra.local.stack up       # S3 + MLflow, train, promote, serve, predict; prints the URLs
    python -m infra.local.stack rehearse # train, stage, gate, promote, verify, roll back, verify
    python -m infra.local.stack status
    python -m infra.local.stack down     # stops what `up` started, by process group; data stays

Settings come from the environment and from .env in the checkout, as compose reads them (the environment
wins). State lives in SANDBOX_DIR (.sandbox): the SQLite store, S3 objects, one log file per service in
logs/, and PID files in run/. Running `up` again registers the next version; serving follows @production.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet
from dotenv import load_dotenv
from pydantic import ValidationError

from infra.local.endpoints import ENDPOINTS_FILE
from infra.local.processes import PROJECT_ROOT, Processes, StackError
from infra.local.settings import LocalStackSettings
from mlops_sandbox.gate import wait_until_served
from mlops_sandbox.settings import PLACEHOLDER, ModelReference, command_name
from mlops_sandbox.v2 import InferenceError
from mlops_sandbox.waiting import DependencyUnavailable

PYTHON = sys.executable
SCENARIOS = ("good", "schema", "worse", "slower", "shadow")
"""The rollout rehearsals of infra.ops.rollout.rehearse (four canaries and a shadow)."""
SERVICE_ORDER = ("s3", "mlflow", "serving", "serving-staging", "router", "prometheus")
ENV_FILE = PROJECT_ROOT / ".env"


def read_env_file(path: Path) -> bool:
    """Put the variables of `path` (a .env file) in this process's environment, as compose reads them: a
    variable already set in the environment wins, and ${VAR} refers to another variable. False when there is
    no such file."""
    return load_dotenv(path, override=False, interpolate=True)


class Stack:
    """One local sandbox: its settings, and each process's environment."""

    def __init__(self, settings: LocalStackSettings) -> None:
        self.settings = settings
        self.processes = Processes(settings.run, settings.logs, self.env)

    def _s3_credentials(self) -> dict[str, str]:
        """The S3 keys: from the environment (or .env) when set, else generated once and kept (mode 600)."""
        if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
            return {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        path = self.settings.root / "s3-credentials.json"
        if not path.exists():
            keys = {
                "AWS_ACCESS_KEY_ID": f"sandbox{secrets.token_hex(6)}",
                "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
            }
            path.touch(mode=0o600)
            path.write_text(json.dumps(keys))
        return json.loads(path.read_text())

    def _webhook_secrets(self) -> dict[str, str]:
        """The webhook's HMAC secret (serving) and the key MLflow encrypts it with (see `_kept_secrets`). The
        placeholders of .env.example count as unset here: MLflow cannot start on a Fernet key that is not one."""
        return self._kept_secrets(
            "webhook-secrets.json",
            {
                "SANDBOX_SERVING_WEBHOOK_SECRET": lambda: secrets.token_hex(32),
                "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": lambda: Fernet.generate_key().decode(),
            },
        )

    def _auth_secrets(self) -> dict[str, str]:
        """The serving user's password and the auth app's Flask key (see `_kept_secrets`); the admin's password
        is yours to set (SANDBOX_AUTH_ADMIN_PASSWORD): you sign in to the UI with it."""
        return self._kept_secrets(
            "auth-secrets.json",
            {
                "SANDBOX_AUTH_SERVING_PASSWORD": lambda: secrets.token_urlsafe(24),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": lambda: secrets.token_hex(32),
            },
        )

    def _kept_secrets(self, filename: str, generators: dict[str, Callable[[], str]]) -> dict[str, str]:
        """The secrets named by `generators`: from the environment (or .env) when set, else generated once and
        kept in SANDBOX_DIR/`filename` (mode 600), so that a restart finds the same ones."""
        given = {k: os.environ.get(k, "") for k in generators}
        if all(value and not value.startswith(PLACEHOLDER) for value in given.values()):
            return given
        path = self.settings.root / filename
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(json.dumps({k: generate() for k, generate in generators.items()}))
        kept = json.loads(path.read_text())
        return {k: v if v and not v.startswith(PLACEHOLDER) else kept[k] for k, v in given.items()}

    def _sign_in(self, env: dict[str, str], name: str) -> None:
        """With SANDBOX_AUTH on: serving signs in as the read-only serving user, every other client as the admin
        (MLflow's client reads MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD), and the tracking server
        gets what it needs to create both. Only the tracking server sees the admin's password variable."""
        auth = self.settings.auth
        if name != "mlflow":
            env.pop("SANDBOX_AUTH_ADMIN_PASSWORD", None)
        if not auth.enabled:
            return
        kept = self._auth_secrets()
        if name == "mlflow":
            env.update(kept)
            if not env.get("SANDBOX_AUTH_DATABASE_URI"):
                env["SANDBOX_AUTH_DATABASE_URI"] = f"sqlite:///{self.settings.root / 'basic_auth.db'}"
        elif name in ("serving", "serving-staging"):
            env["MLFLOW_TRACKING_USERNAME"] = auth.serving_username
            env["MLFLOW_TRACKING_PASSWORD"] = kept["SANDBOX_AUTH_SERVING_PASSWORD"]
        else:
            env["MLFLOW_TRACKING_USERNAME"] = auth.admin_username
            env["MLFLOW_TRACKING_PASSWORD"] = auth.require("admin_password").get_secret_value()

    def client_endpoints(self) -> dict[str, str]:
        """Where a client finds this stack's services: the tracking server, both endpoints, the router,
        Prometheus, and the addresses a rollout and its traffic publish their metrics on."""
        s, ports = self.settings, self.settings.stack
        return {
            "MLFLOW_TRACKING_URI": s.url(ports.mlflow_port),
            "SANDBOX_SERVING_URL": s.url(ports.serving_http_port),
            "SANDBOX_STAGING_URL": s.url(ports.staging_http_port),
            "SANDBOX_ROUTER_ADMIN_URL": f"http://127.0.0.1:{ports.router_admin_port}",
            "SANDBOX_PROMETHEUS_URL": s.url(ports.prometheus_port),
            "SANDBOX_ROLLOUT_METRICS_ADDRESS": f"127.0.0.1:{ports.rollout_metrics_port}",
            "SANDBOX_ROUTER_URL": s.url(ports.router_rest_port),
            "SANDBOX_ROUTER_GRPC_TARGET": f"{s.host}:{ports.router_grpc_port}",
            "SANDBOX_REHEARSAL_REST_TRAFFIC_METRICS": f"127.0.0.1:{ports.traffic_metrics_port}",
            "SANDBOX_REHEARSAL_GRPC_TRAFFIC_METRICS": f"127.0.0.1:{ports.traffic_grpc_metrics_port}",
        }

    def write_client_endpoints(self) -> Path:
        """Write `client_endpoints` to SANDBOX_DIR/run/endpoints.env (dotenv), for `sandbox` commands run from
        another shell, which may not have the settings this stack was started with (endpoints.local_stack)."""
        path = self.settings.run / ENDPOINTS_FILE
        path.write_text("".join(f"{key}={value}\n" for key, value in self.client_endpoints().items()))
        return path

    def env(self, name: str) -> dict[str, str]:
        """The environment of process `name`: yours, plus what ties the services together."""
        s, ports = self.settings, self.settings.stack
        bind = ports.bind_address
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.update(self.client_endpoints())
        self._sign_in(env, name)
        if name == "s3":
            env.update(self._s3_credentials())
            env["SANDBOX_S3_SERVER_ADDRESS"] = f"{bind}:{ports.s3_port}"
            env["SANDBOX_S3_SERVER_DIR"] = str(s.root / "s3")
        elif name in ("mlflow", "create-bucket"):
            if not env.get("MLFLOW_BACKEND_STORE_URI"):  # unset, or empty as in .env.example
                env["MLFLOW_BACKEND_STORE_URI"] = f"sqlite:///{s.root / 'mlflow.db'}"
            env["MLFLOW_HOST"] = bind
            env["MLFLOW_PORT"] = str(ports.mlflow_port)
            key = "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"
            env[key] = self._webhook_secrets()[key]
            if s.artifact_store == "s3":
                env.update(self._s3_credentials())
                env["MLFLOW_S3_ENDPOINT_URL"] = s.url(ports.s3_port)
                env["MLFLOW_ARTIFACTS_DESTINATION"] = f"s3://{ports.s3_bucket}/"
            else:
                env["MLFLOW_ARTIFACTS_DESTINATION"] = str(s.root / "artifacts")
        elif name in ("serving", "serving-staging"):
            staging = name == "serving-staging"
            env["MLSERVER_HOST"] = bind
            env["MLSERVER_HTTP_PORT"] = str(ports.staging_http_port if staging else ports.serving_http_port)
            env["MLSERVER_GRPC_PORT"] = str(ports.staging_grpc_port if staging else ports.serving_grpc_port)
            env["MLSERVER_METRICS_PORT"] = str(ports.staging_metrics_port if staging else ports.serving_metrics_port)
            env["SANDBOX_SERVING_DIR"] = str(s.root / "serving" / ("staging" if staging else "production"))
            # The tracking server runs on this machine: it reaches the webhook receiver on loopback.
            webhook_port = ports.staging_webhook_port if staging else ports.serving_webhook_port
            env["SANDBOX_SERVING_WEBHOOK_ADDRESS"] = f"127.0.0.1:{webhook_port}"
            key = "SANDBOX_SERVING_WEBHOOK_SECRET"
            env[key] = self._webhook_secrets()[key]
            if staging:
                env["SANDBOX_MODEL_REF"] = "@staging"
        elif name == "router":
            env["SANDBOX_ROUTER_REST_ADDRESS"] = f"{bind}:{ports.router_rest_port}"
            env["SANDBOX_ROUTER_GRPC_ADDRESS"] = f"{bind}:{ports.router_grpc_port}"
            env["SANDBOX_ROUTER_ADMIN_ADDRESS"] = f"127.0.0.1:{ports.router_admin_port}"
            env["SANDBOX_ROUTER_PRODUCTION_REST"] = f"127.0.0.1:{ports.serving_http_port}"
            env["SANDBOX_ROUTER_PRODUCTION_GRPC"] = f"127.0.0.1:{ports.serving_grpc_port}"
            env["SANDBOX_ROUTER_CANDIDATE_REST"] = f"127.0.0.1:{ports.staging_http_port}"
            env["SANDBOX_ROUTER_CANDIDATE_GRPC"] = f"127.0.0.1:{ports.staging_grpc_port}"
            env["SANDBOX_ROUTER_CONFIG_DIR"] = str(s.root / "router")
        elif name == "prometheus":
            env["SANDBOX_PROMETHEUS_ADDRESS"] = f"{bind}:{ports.prometheus_port}"
            env["SANDBOX_PROMETHEUS_DATA_DIR"] = str(s.root / "prometheus")
            env["SANDBOX_PROMETHEUS_SERVING"] = (
                f"127.0.0.1:{ports.serving_metrics_port},127.0.0.1:{ports.staging_metrics_port}"
            )
            env["SANDBOX_PROMETHEUS_ROUTER"] = f"127.0.0.1:{ports.router_admin_port}"
            env["SANDBOX_PROMETHEUS_TRAFFIC"] = (
                f"127.0.0.1:{ports.traffic_metrics_port},127.0.0.1:{ports.traffic_grpc_metrics_port}"
            )
            env["SANDBOX_PROMETHEUS_ROLLOUT"] = f"127.0.0.1:{ports.rollout_metrics_port}"
        return env


def up(stack: Stack, *, train: bool) -> None:
    """Start what is not running, train and promote a new version (unless `train` is off), check predictions."""
    s, ports, run = stack.settings, stack.settings.stack, stack.processes
    model = ModelReference()
    began = time.monotonic()
    for folder in (s.root, s.logs, s.run):
        folder.mkdir(parents=True, exist_ok=True)
    print(f"sandbox in {s.root}" + (f" (settings from {ENV_FILE})" if ENV_FILE.exists() else ""))
    # Prometheus comes from the system (Debian's package), not from the venv: without it the sandbox runs, and
    # only rollouts, which read their metrics from it, are unavailable.
    with_prometheus = shutil.which("prometheus") is not None
    # What is missing or taken stops `up` before it starts anything: the environments, then every port.
    if not s.tracking_interpreter.exists():
        raise StackError(
            f"the tracking server's environment is missing ({s.tracking_interpreter}, SANDBOX_TRACKING_PYTHON): "
            "make it with bash infra/bootstrap.sh"
        )
    listeners = [
        ("mlflow", "mlflow_port"),
        ("serving", "serving_http_port"),
        ("serving-staging", "staging_http_port"),
        ("router", "router_rest_port"),
    ]
    if s.artifact_store == "s3":
        listeners.insert(0, ("s3", "s3_port"))
    if with_prometheus:
        listeners.append(("prometheus", "prometheus_port"))
    for name, field in listeners:
        run.check_port(name, getattr(ports, field), str(type(ports).model_fields[field].validation_alias))
    if s.artifact_store == "s3":
        # rclone answers 403 to an unsigned request once it is up: any HTTP answer means "listening".
        run.start("s3", [PYTHON, "-m", "services.s3.entrypoint"])
        run.wait_ready("s3", s.url(ports.s3_port), timeout=s.start_timeout, any_answer=True)
        run.job("create-bucket", [PYTHON, "-m", "infra.ops.create_bucket"])
    mlflow_url = s.url(ports.mlflow_port)
    run.start("mlflow", [str(s.tracking_interpreter), "-m", "services.mlflow.entrypoint"])
    run.wait_ready("mlflow", f"{mlflow_url}/health", timeout=s.start_timeout)
    stack.write_client_endpoints()
    result_file = s.run / "last-training.json"
    if train:
        run.job("training", [PYTHON, "-m", "training.train", "--output-json", str(result_file)])
        version = json.loads(result_file.read_text())["version"]
        run.job("promote", [PYTHON, "-m", "infra.ops.registry", "promote", version, "--to", "production"])
    # A running server follows @production (and @staging) by itself: a rerun needs no restart.
    serving_url, staging_url = s.url(ports.serving_http_port), s.url(ports.staging_http_port)
    endpoints = (("serving", serving_url), ("serving-staging", staging_url))
    for name, _ in endpoints:
        run.start(name, [PYTHON, "-m", "services.serving.entrypoint"])
    # The router and Prometheus start with the endpoints; all are waited for together.
    run.start("router", [PYTHON, "-m", "services.router.entrypoint"])
    if with_prometheus:
        run.start("prometheus", [PYTHON, "-m", "services.prometheus.entrypoint"])
    else:
        print("  prometheus: not installed (apt-get install prometheus); canary rollouts need it, the rest does not")
    for name, url in endpoints:
        run.wait_ready(name, f"{url}/v2/models/{model.name}/ready", timeout=s.start_timeout)
    run.wait_ready("router", f"http://127.0.0.1:{ports.router_admin_port}/ready", timeout=s.start_timeout)
    if with_prometheus:
        run.wait_ready("prometheus", f"{s.url(ports.prometheus_port)}/-/ready", timeout=s.start_timeout)
    if train:
        took = wait_until_served(serving_url, model.name, version, timeout=s.start_timeout)
        print(f"  serving: production serves version {version} ({took:.1f} s after the promotion)")
    check = ["--serving-url", serving_url, "-n", str(ports.predict_images), "--min-accuracy", str(ports.min_accuracy)]
    run.job("predict", [PYTHON, "-m", "infra.ops.predict", *check])
    print(
        f"\nThe sandbox is up ({time.monotonic() - began:.0f} s).\n"
        f"  MLflow UI and tracking:  {mlflow_url}\n"
        f"  Model registry:          {mlflow_url}/#/models/{model.name}\n"
        f"  Inference (V2 REST):     {serving_url}/v2/models/{model.name}/infer\n"
        f"  Inference (V2 gRPC):     {s.host}:{ports.serving_grpc_port}\n"
        f"  Staging (V2 REST):       {staging_url}/v2/models/{model.name}/infer (@staging)\n"
        f"  Router (V2 REST, gRPC):  {s.url(ports.router_rest_port)}/v2/models/{model.name}/infer, "
        f"{s.host}:{ports.router_grpc_port}\n"
        + (f"  Prometheus:              {s.url(ports.prometheus_port)}\n" if with_prometheus else "")
        + f"  Serving metrics:         {s.url(ports.serving_metrics_port)}/metrics\n"
        + (
            f"  S3 (rclone):             {s.url(ports.s3_port)}, bucket {ports.s3_bucket}\n"
            if s.artifact_store == "s3"
            else ""
        )
        + f"  Logs:                    {s.logs}\n"
        + (
            f"  Sign in (basic auth):    user {s.auth.admin_username}, password SANDBOX_AUTH_ADMIN_PASSWORD; serving "
            f"reads as {s.auth.serving_username}\n"
            if s.auth.enabled
            else "  Authentication:          off (SANDBOX_AUTH): turn it on before others can reach these ports\n"
        )
        + "  Registry:                sandbox list (finds this stack from this folder; elsewhere set "
        f"MLFLOW_TRACKING_URI={mlflow_url})\n"
        "  Stop:                    bash infra/sandbox.sh down"
    )


def rehearse(stack: Stack, scenario: str | None, extra: list[str]) -> None:
    """Run a rehearsal against the running sandbox: the gated blue-green one (infra.ops.rehearsal) without a
    scenario, else that rollout scenario (infra.ops.rollout.rehearse: good, schema, worse, slower, shadow)."""
    # The blue-green rehearsal needs the tracking server and both endpoints; a canary also the router and Prometheus.
    needed = SERVICE_ORDER[1:] if scenario else ("mlflow", "serving", "serving-staging")
    missing = [name for name in needed if stack.processes.running(name) is None]
    if missing:
        raise StackError(f"not running: {', '.join(missing)}; start the sandbox first: bash infra/sandbox.sh")
    if scenario is None:
        stack.processes.job("rehearsal", [PYTHON, "-m", "infra.ops.rehearsal", *extra])
    else:
        stack.processes.job(f"rehearsal-{scenario}", [PYTHON, "-m", "infra.ops.rollout.rehearse", scenario, *extra])


def down(stack: Stack) -> None:
    """Stop every service that `up` started, in reverse order; the data in SANDBOX_DIR stays."""
    stopped = [name for name in reversed(SERVICE_ORDER) if stack.processes.stop(name)]
    print("stopped " + ", ".join(stopped) if stopped else "nothing was running")


def status(stack: Stack) -> None:
    for name in SERVICE_ORDER:
        record = stack.processes.running(name)
        print(f"{name:16} {'running, pid ' + str(record.pid) if record else 'stopped'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=command_name("infra.local.stack"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("up", "rehearse", "down", "status"))
    parser.add_argument(
        "scenario", nargs="?", choices=SCENARIOS, help="rehearse: a rollout scenario (default: the gated blue-green)"
    )
    parser.add_argument("--no-train", action="store_true", help="serve the current production version as is")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "rehearse":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    read_env_file(ENV_FILE)
    try:
        stack = Stack(LocalStackSettings())
        if args.command == "up":
            up(stack, train=not args.no_train)
        elif args.command == "rehearse":
            rehearse(stack, args.scenario, extra)
        elif args.command == "down":
            down(stack)
        else:
            status(stack)
    except ValidationError as err:
        print(f"invalid settings:\n{err}", file=sys.stderr)
        return 2
    except (StackError, DependencyUnavailable, InferenceError) as err:
        running = any(stack.processes.running(name) for name in SERVICE_ORDER)
        after = "\nWhat is running stays up for inspection; stop it with: bash infra/sandbox.sh down" if running else ""
        print(f"\nerror: {err}{after}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Driving one compose project from a test: its env file, its free host ports, compose commands, clients."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from cryptography.fernet import Fernet
from mlflow.tracking import MlflowClient

from mlops_sandbox.v2 import V2Client
from tests.support import host_port_names
from tools.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = Path(sys.executable).with_name("docker-compose")
DOCKER = "/usr/bin/docker"
SMOKE_OVERRIDE = ROOT / ".ci" / "compose.smoke.yaml"
SCALE_OVERRIDE = ROOT / "infra" / "compose" / "scale.yaml"
MODEL_NAME = "pytorch_simplenn_mnist"
BASE_IMAGE = "mlops-sandbox-base/python:3.11-bookworm"
# The tags the smoke test builds, and removes when it is done.
SMOKE_IMAGES = {
    "SANDBOX_MLFLOW_IMAGE": "mlops-sandbox-smoke/mlflow:test",
    "SANDBOX_ML_IMAGE": "mlops-sandbox-smoke/ml:test",
    "SANDBOX_S3_IMAGE": "mlops-sandbox-smoke/s3:test",
    "SANDBOX_POSTGRES_IMAGE": "mlops-sandbox-smoke/postgres:test",
    "SANDBOX_ROUTER_IMAGE": "mlops-sandbox-smoke/router:test",
    "SANDBOX_PROMETHEUS_IMAGE": "mlops-sandbox-smoke/prometheus:test",
}
# The wheelhouse that the image builds install from, served on the host (see the images fixture).
WHEELHOUSE_PORT = 3141
PORT_NAMES = host_port_names()


def compose_env() -> dict[str, str]:
    """Only what compose needs to run: the project's variables come from the env file alone."""
    return {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": os.environ.get("HOME", "/root")}


@dataclass
class ComposeStack:
    """One compose project of the smoke test, on free loopback ports."""

    backend: str
    workdir: Path
    mnist_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    # Production replicas: more than one runs with infra/compose/scale.yaml, reached through the router.
    replicas: int = 1

    def __post_init__(self) -> None:
        self.project = f"mlops-smoke-{self.backend}-{os.getpid()}"
        self.env_file = self.workdir / "smoke.env"
        self.ports = {name: free_port() for name in PORT_NAMES}
        password = secrets.token_hex(12)
        self.settings = {
            **SMOKE_IMAGES,
            **{name: str(port) for name, port in self.ports.items()},
            "SANDBOX_PYTHON_IMAGE": BASE_IMAGE,
            "SANDBOX_SMOKE_WHEELHOUSE_URL": f"http://127.0.0.1:{WHEELHOUSE_PORT}/",
            # No PyTorch index here: torch comes from the wheelhouse, PyPI's build.
            "SANDBOX_TORCH_INDEX_URL": "",
            "AWS_ACCESS_KEY_ID": f"smoke{secrets.token_hex(4)}",
            "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
            "POSTGRES_PASSWORD": password,
            "SANDBOX_SERVING_WEBHOOK_SECRET": secrets.token_hex(16),
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "SANDBOX_SMOKE_MNIST_DIR": str(self.mnist_dir),
            # A quick model: 5000 images, one epoch (about 90 % test accuracy).
            "SANDBOX_TRAIN_LIMIT": "5000",
            "SANDBOX_TRAIN_EPOCHS": "1",
            "SANDBOX_PREDICT_IMAGES": "500",
            "SANDBOX_MIN_ACCURACY": "0.85",
            "COMPOSE_PROFILES": "postgres" if self.backend == "postgres" else "",
        }
        if self.backend == "postgres":
            # The one line .env.example tells users to uncomment, with the variables compose fills in.
            self.settings["MLFLOW_BACKEND_STORE_URI"] = (
                "postgresql+psycopg2://${POSTGRES_USER:-mlflow}:${POSTGRES_PASSWORD}@postgres:5432/${POSTGRES_DB:-mlflow}"
            )
        self.write_env()

    def write_env(self) -> None:
        """The user's path: .env.example, with the smoke test's values appended (later lines win)."""
        example = (ROOT / ".env.example").read_text()
        self.env_file.write_text(example + "\n" + "".join(f"{k}={v}\n" for k, v in self.settings.items()))

    def set(self, **values: str) -> None:
        self.settings.update(values)
        self.write_env()

    def compose(
        self, *args: str, timeout: float = 1200, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            str(COMPOSE),
            "--project-directory",
            str(ROOT),
            "--project-name",
            self.project,
            "--env-file",
            str(self.env_file),
            "-f",
            str(ROOT / "compose.yaml"),
            "-f",
            str(SMOKE_OVERRIDE),
            *(["-f", str(SCALE_OVERRIDE)] if self.replicas > 1 else []),
            *args,
        ]
        result = subprocess.run(
            argv, capture_output=True, text=True, env={**compose_env(), **(env or {})}, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                f"{result.stderr[-3000:]}\n--- logs ---\n{self.logs()}"
            )
        return result

    def logs(self, *services: str, tail: int = 40) -> str:
        result = self.compose("logs", "--no-color", "--tail", str(tail), *services, check=False, timeout=120)
        return result.stdout[-8000:] + result.stderr[-1000:]

    def up(self, wait_seconds: int) -> None:
        """`up --detach --wait`, with the production replicas this stack runs."""
        scale = ["--scale", f"serving={self.replicas}"] if self.replicas > 1 else []
        self.compose(
            "up", "--detach", "--wait", "--wait-timeout", str(wait_seconds), *scale, timeout=wait_seconds + 300
        )

    def containers(self) -> dict[str, list[dict]]:
        """Service name -> the state of each of its containers (`docker compose ps -a`)."""
        out = self.compose("ps", "-a", "--format", "json").stdout.strip()
        rows = json.loads(out) if out.startswith("[") else [json.loads(line) for line in out.splitlines() if line]
        by_service: dict[str, list[dict]] = {}
        for row in rows:
            by_service.setdefault(row["Service"], []).append(row)
        return by_service

    # --- clients, from the host through the published ports ------------------------------------------
    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['SANDBOX_MLFLOW_PORT']}"

    @property
    def serving_url(self) -> str:
        """Production's REST endpoint: its own port, or the router in front of its replicas."""
        port = "SANDBOX_ROUTER_REST_PORT" if self.replicas > 1 else "SANDBOX_SERVING_HTTP_PORT"
        return f"http://127.0.0.1:{self.ports[port]}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['SANDBOX_PROMETHEUS_PORT']}"

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['SANDBOX_ROUTER_REST_PORT']}"

    def mlflow(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.mlflow_url)

    def s3(self):  # noqa: ANN201 - boto3 clients have no static type
        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.ports['SANDBOX_S3_PORT']}",
            aws_access_key_id=self.settings["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.settings["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )

    def bucket_keys(self) -> list[str]:
        paginator = self.s3().get_paginator("list_objects_v2")
        return sorted(obj["Key"] for page in paginator.paginate(Bucket="mlflow") for obj in page.get("Contents", []))

    def rest(self) -> V2Client:
        return V2Client(self.serving_url, MODEL_NAME)

    @property
    def grpc_address(self) -> str:
        port = "SANDBOX_ROUTER_GRPC_PORT" if self.replicas > 1 else "SANDBOX_SERVING_GRPC_PORT"
        return f"127.0.0.1:{self.ports[port]}"


def image_exists(name: str) -> bool:
    return subprocess.run([DOCKER, "image", "inspect", name], capture_output=True, timeout=60).returncode == 0


def psql(stack: ComposeStack, query: str) -> str:
    result = stack.compose("exec", "-T", "postgres", "psql", "-U", "mlflow", "-d", "mlflow", "-tAc", query, timeout=120)
    return result.stdout.strip()


def model_artifact_keys(keys: list[str]) -> list[str]:
    return [key for key in keys if re.search(r"/artifacts/(MLmodel|data/model\.pth)$", key)]

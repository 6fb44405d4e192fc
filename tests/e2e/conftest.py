"""One real stack for the end-to-end tests: rclone S3, the MLflow server, a trained and promoted model,
and MLServer, each on free loopback ports, started through the project's own entrypoints. Serving follows
@production through MLflow's webhook, with polling slowed to once a minute."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.support import TRACKING_PYTHON, Service, module_env, restartable_server, run_module, server
from tools.ports import free_port

MODEL = "pytorch_simplenn_mnist"


@dataclass(frozen=True)
class Stack:
    root: Path
    tracking_uri: str
    s3_endpoint: str
    s3_keys: dict[str, str]
    version: str
    serving_url: str
    grpc_port: int
    metrics_url: str
    poll_seconds: float
    serving_log: Path
    s3: Service
    """The S3 server, for tests that crash it (tests/e2e/test_faults.py): they start it again before they end."""
    mlflow: Service
    """The tracking server, likewise."""

    def client_env(self, **overrides: str) -> dict[str, str]:
        """What a user's client has: the tracking URI, and no S3 credentials at all."""
        env = module_env(MLFLOW_TRACKING_URI=self.tracking_uri, **overrides)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
            env.pop(key, None)
        return env

    def serving_env(self, **overrides: str) -> dict[str, str]:
        return self.client_env(MLSERVER_HOST="127.0.0.1", **overrides)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    keys = {"AWS_ACCESS_KEY_ID": f"test{secrets.token_hex(4)}", "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16)}
    s3_port, mlflow_port = free_port(), free_port()
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    s3_endpoint = f"http://127.0.0.1:{s3_port}"
    tracking_uri = f"http://127.0.0.1:{mlflow_port}"
    server_env = module_env(
        **keys,
        SANDBOX_S3_SERVER_ADDRESS=f"127.0.0.1:{s3_port}",
        SANDBOX_S3_SERVER_DIR=str(root / "s3"),
        MLFLOW_S3_ENDPOINT_URL=s3_endpoint,
        MLFLOW_ARTIFACTS_DESTINATION="s3://mlflow/",
        MLFLOW_BACKEND_STORE_URI=f"sqlite:///{root / 'mlflow.db'}",
        MLFLOW_PORT=str(mlflow_port),
        # Kept across restarts, as compose and the local stack keep it: MLflow encrypts the webhooks' secrets
        # with it, and a server restarted with another key can deliver no webhook (InvalidToken).
        MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=Fernet.generate_key().decode(),
    )
    with ExitStack() as running:
        s3 = running.enter_context(
            restartable_server("s3", "services.s3.entrypoint", server_env, root, s3_endpoint, any_answer=True)
        )
        bucket = run_module("infra.ops.create_bucket", env=server_env)
        assert bucket.returncode == 0, bucket.stderr
        mlflow = running.enter_context(
            restartable_server(
                "mlflow",
                "services.mlflow.entrypoint",
                server_env,
                root,
                f"{tracking_uri}/health",
                python=TRACKING_PYTHON,
            )
        )

        client_env = module_env(MLFLOW_TRACKING_URI=tracking_uri, SANDBOX_MNIST_ROOT=str(mnist_root))
        result_file = root / "training.json"
        trained = run_module(
            "training.train",
            "--train-limit",
            "6000",
            "--epochs",
            "1",
            "--output-json",
            str(result_file),
            env=client_env,
        )
        assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
        version = json.loads(result_file.read_text())["version"]
        promoted = run_module("infra.ops.registry", "promote", version, "--to", "production", env=client_env)
        assert promoted.returncode == 0, promoted.stderr

        stack = Stack(
            root=root,
            tracking_uri=tracking_uri,
            s3_endpoint=s3_endpoint,
            s3_keys=keys,
            version=version,
            serving_url=f"http://127.0.0.1:{http_port}",
            grpc_port=grpc_port,
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
            # The longest poll interval there is: alias moves reach this endpoint through MLflow's webhook.
            poll_seconds=60.0,
            serving_log=root / "serving.log",
            s3=s3,
            mlflow=mlflow,
        )
        serving_env = stack.serving_env(
            MLSERVER_HTTP_PORT=str(http_port),
            MLSERVER_GRPC_PORT=str(grpc_port),
            MLSERVER_METRICS_PORT=str(metrics_port),
            SANDBOX_SERVING_POLL_SECONDS=str(stack.poll_seconds),
            SANDBOX_SERVING_WEBHOOK_ADDRESS=f"127.0.0.1:{free_port()}",
            SANDBOX_SERVING_WEBHOOK_SECRET=secrets.token_hex(16),
        )
        ready = f"{stack.serving_url}/v2/models/{MODEL}/ready"
        running.enter_context(server("serving", "services.serving.entrypoint", serving_env, root, ready, timeout=180))
        yield stack

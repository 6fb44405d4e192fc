"""Settings of the stack as a whole: what compose.yaml and the local stack read to lay the services out.

`StackSettings` is read by both (compose through `${VAR:-default}`, the local stack through this class), so
a port or a bucket means the same on either path. `ComposeSettings` holds what only compose.yaml reads:
images, builds, profiles and the PostgreSQL account. No process reads that class; it exists so that those
variables are documented and checked like every other (docs/settings.md, .env.example, and the test that
compares compose.yaml with them).
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from mlops_sandbox.settings import IN_ENV_EXAMPLE, PLACEHOLDER, SandboxSettings


class StackSettings(SandboxSettings):
    """Ports on your machine, the bucket, and the final accuracy check, for compose and the local stack alike.

    The ports are host ports: compose publishes each container's fixed port on them; the local stack runs
    the service on them.
    """

    bind_address: str = Field("127.0.0.1", validation_alias="SANDBOX_BIND_ADDRESS")
    """The host address that every port binds to. 127.0.0.1 keeps the sandbox off your network."""
    mlflow_port: int = Field(5000, ge=1, le=65535, validation_alias="SANDBOX_MLFLOW_PORT")
    """MLflow's UI, tracking API and Model Registry."""
    s3_port: int = Field(9000, ge=1, le=65535, validation_alias="SANDBOX_S3_PORT")
    """The S3 API of the object store (MinIO in compose, rclone in the local stack)."""
    s3_console_port: int = Field(9001, ge=1, le=65535, validation_alias="SANDBOX_S3_CONSOLE_PORT")
    """MinIO's web console (compose only; rclone has none)."""
    serving_http_port: int = Field(8080, ge=1, le=65535, validation_alias="SANDBOX_SERVING_HTTP_PORT")
    """Production (@production): V2 REST."""
    serving_grpc_port: int = Field(8081, ge=1, le=65535, validation_alias="SANDBOX_SERVING_GRPC_PORT")
    """Production: V2 gRPC."""
    serving_metrics_port: int = Field(8082, ge=1, le=65535, validation_alias="SANDBOX_SERVING_METRICS_PORT")
    """Production: Prometheus /metrics."""
    staging_http_port: int = Field(8090, ge=1, le=65535, validation_alias="SANDBOX_STAGING_HTTP_PORT")
    """Staging (@staging): V2 REST."""
    staging_grpc_port: int = Field(8091, ge=1, le=65535, validation_alias="SANDBOX_STAGING_GRPC_PORT")
    """Staging: V2 gRPC."""
    staging_metrics_port: int = Field(8092, ge=1, le=65535, validation_alias="SANDBOX_STAGING_METRICS_PORT")
    """Staging: Prometheus /metrics."""
    serving_webhook_port: int = Field(8083, ge=1, le=65535, validation_alias="SANDBOX_SERVING_WEBHOOK_PORT")
    """Production: where it receives MLflow's webhook (alias moves), on 127.0.0.1. The local stack's; in
    compose the tracking server reaches the receiver inside the compose network, unpublished."""
    staging_webhook_port: int = Field(8093, ge=1, le=65535, validation_alias="SANDBOX_STAGING_WEBHOOK_PORT")
    """Staging: where it receives MLflow's webhook (local stack)."""
    router_rest_port: int = Field(8070, ge=1, le=65535, validation_alias="SANDBOX_ROUTER_REST_PORT")
    """The router (Envoy): the one public V2 REST endpoint of rollouts, in front of production and candidate."""
    router_grpc_port: int = Field(8071, ge=1, le=65535, validation_alias="SANDBOX_ROUTER_GRPC_PORT")
    """The router: V2 gRPC."""
    router_admin_port: int = Field(8079, ge=1, le=65535, validation_alias="SANDBOX_ROUTER_ADMIN_PORT")
    """The router's admin API: the traffic split, /stats/prometheus. Bound to 127.0.0.1 whatever the bind address."""
    prometheus_port: int = Field(9090, ge=1, le=65535, validation_alias="SANDBOX_PROMETHEUS_PORT")
    """Prometheus: its UI, query API and recording rules."""
    grafana_port: int = Field(3000, ge=1, le=65535, validation_alias="SANDBOX_GRAFANA_PORT")
    """Grafana's rollout dashboard (compose only, profile monitoring)."""
    traffic_metrics_port: int = Field(8075, ge=1, le=65535, validation_alias="SANDBOX_TRAFFIC_METRICS_PORT")
    """The /metrics of a rollout rehearsal's REST traffic generator, while it runs (local stack; in compose
    Prometheus scrapes it inside the network, unpublished, as the next two)."""
    traffic_grpc_metrics_port: int = Field(8077, ge=1, le=65535, validation_alias="SANDBOX_TRAFFIC_GRPC_METRICS_PORT")
    """The /metrics of a rollout rehearsal's gRPC traffic generator, while it runs."""
    rollout_metrics_port: int = Field(8076, ge=1, le=65535, validation_alias="SANDBOX_ROLLOUT_METRICS_PORT")
    """The rollout controller's /metrics (its weight and verdicts), while a rollout runs."""
    s3_bucket: str = Field("mlflow", pattern=r"^[a-z0-9][a-z0-9.\-]{2,62}$", validation_alias="SANDBOX_S3_BUCKET")
    """The bucket that holds every artifact (MLFLOW_ARTIFACTS_DESTINATION is s3://<this>/)."""
    predict_images: int = Field(10_000, ge=1, le=10_000, validation_alias="SANDBOX_PREDICT_IMAGES")
    """MNIST test images the final prediction check sends to production."""
    min_accuracy: float = Field(0.975, ge=0, le=1, validation_alias="SANDBOX_MIN_ACCURACY")
    """The accuracy below which that check fails (local stack: `up` fails; compose: `predict` exits 1)."""


class ComposeSettings(SandboxSettings):
    """What only compose.yaml reads: the images it builds or pulls, its profiles, PostgreSQL's account."""

    compose_profiles: str = Field("", validation_alias="COMPOSE_PROFILES", json_schema_extra=IN_ENV_EXAMPLE)
    """Compose's own: optional profiles to switch on, comma-separated: postgres, predict, tools, gpu, monitoring.
    Empty: none."""
    mlflow_image: str = Field("mlops-sandbox/mlflow:0.1.0", validation_alias="SANDBOX_MLFLOW_IMAGE")
    """Tag of the tracking-server image that compose builds (target mlflow of infra/images/Dockerfile)."""
    ml_image: str = Field("mlops-sandbox/ml:0.1.0", validation_alias="SANDBOX_ML_IMAGE")
    """Tag of the ML image that compose builds (target ml): training, serving, predict."""
    ml_gpu_image: str = Field("mlops-sandbox/ml-gpu:0.1.0", validation_alias="SANDBOX_ML_GPU_IMAGE")
    """Tag of the ML image with CUDA torch (profile gpu)."""
    router_image: str = Field("mlops-sandbox/router:0.1.0", validation_alias="SANDBOX_ROUTER_IMAGE")
    """Tag of the router image that compose builds (target router): Envoy 1.40 under the router's entrypoint."""
    s3_image: str = Field("quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z", validation_alias="SANDBOX_S3_IMAGE")
    """The object store's image, pinned to an exact release. MinIO's Docker Hub images are gone upstream; its
    quay.io images remain. Another S3 server: see docs/operations.md."""
    postgres_image: str = Field("postgres:15.8-bookworm", validation_alias="SANDBOX_POSTGRES_IMAGE")
    """PostgreSQL's image (profile postgres)."""
    prometheus_image: str = Field("prom/prometheus:v3.5.0", validation_alias="SANDBOX_PROMETHEUS_IMAGE")
    """Prometheus's image, pinned to an exact release (3.5, a long-term support release)."""
    grafana_image: str = Field("grafana/grafana:12.2.0", validation_alias="SANDBOX_GRAFANA_IMAGE")
    """Grafana's image (profile monitoring), pinned to an exact release."""
    python_image: str = Field("python:3.11-slim", validation_alias="SANDBOX_PYTHON_IMAGE")
    """The base of every Python image: Python 3.11 with venv."""
    torch_index_url: str = Field("https://download.pytorch.org/whl/cpu", validation_alias="SANDBOX_TORCH_INDEX_URL")
    """Where the ML image and the venv (infra/bootstrap.sh) get torch: PyTorch's CPU wheels. Empty, or for the venv
    an index it cannot reach: PyPI's build, which on Linux carries NVIDIA's CUDA libraries (about 4 GB more)."""
    torch_gpu_index_url: str = Field(
        "https://download.pytorch.org/whl/cu128", validation_alias="SANDBOX_TORCH_GPU_INDEX_URL"
    )
    """Where the GPU image gets torch: CUDA 12.8 wheels."""
    postgres_user: str = Field("mlflow", validation_alias="POSTGRES_USER")
    """The postgres image's own: the user it creates (profile postgres)."""
    postgres_password: SecretStr = Field(
        SecretStr(f"{PLACEHOLDER}-postgres-password"),
        validation_alias="POSTGRES_PASSWORD",
        examples=[f"{PLACEHOLDER}-postgres-password"],
        json_schema_extra=IN_ENV_EXAMPLE,
    )
    """The postgres image's own: that user's password. Compose requires it even without the profile. Keep it
    URL-safe: it goes into MLFLOW_BACKEND_STORE_URI."""
    postgres_db: str = Field("mlflow", validation_alias="POSTGRES_DB")
    """The postgres image's own: the database it creates."""

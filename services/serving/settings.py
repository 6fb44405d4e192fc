"""Settings of the model server: MLServer's own variables (MLSERVER_*) where MLServer has one, SANDBOX_* for the rest.

Measured effects of the performance defaults are in docs/performance.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from mlops_sandbox.settings import (
    IN_ENV_EXAMPLE,
    PER_PROCESS,
    PLACEHOLDER,
    ModelReference,
    SandboxSettings,
    TrackingClientSettings,
    composed,
    split_host_port,
)


class ServingSettings(SandboxSettings):
    """One serving endpoint: which registered version it serves, on which ports, and how."""

    tracking: TrackingClientSettings = composed(TrackingClientSettings, "SANDBOX_SERVING_TRACKING")
    model: ModelReference = composed(ModelReference, "SANDBOX_SERVING_MODEL")
    """What it serves: SANDBOX_MODEL_NAME and SANDBOX_MODEL_REF (@production; @staging for staging)."""
    poll_seconds: float = Field(2.0, gt=0, le=60, validation_alias="SANDBOX_SERVING_POLL_SECONDS")
    """How often a followed alias or stage is checked in the registry (seconds). With the registry's webhook
    (SANDBOX_SERVING_WEBHOOK_ADDRESS), an alias move is seen at once, and this is the fallback for a missed
    delivery."""
    webhook_address: str | None = Field(
        None, validation_alias="SANDBOX_SERVING_WEBHOOK_ADDRESS", json_schema_extra=PER_PROCESS
    )
    """host:port on which serving receives MLflow's model-registry webhook (alias moves), registered in MLflow
    at start. Unset: no webhook, the alias is polled only. Needs a SQL backend store (MLflow has no webhooks
    on a file store) and SANDBOX_SERVING_WEBHOOK_SECRET."""
    webhook_url: str | None = Field(None, validation_alias="SANDBOX_SERVING_WEBHOOK_URL", json_schema_extra=PER_PROCESS)
    """The URL at which the tracking server reaches that receiver (compose: http://serving:8083/). Unset:
    http://HOST:PORT/ of SANDBOX_SERVING_WEBHOOK_ADDRESS (loopback when it binds every address)."""
    webhook_secret: SecretStr | None = Field(
        None,
        validation_alias="SANDBOX_SERVING_WEBHOOK_SECRET",
        examples=[f"{PLACEHOLDER}-webhook-secret"],
        json_schema_extra=IN_ENV_EXAMPLE,
    )
    """The HMAC secret that MLflow signs each webhook delivery with, and serving checks (any string; 32 random
    bytes in hex is plenty). Serving registers it with its webhook; a delivery signed otherwise gets a 401."""
    serving_dir: Path | None = Field(None, validation_alias="SANDBOX_SERVING_DIR", json_schema_extra=PER_PROCESS)
    """Where served versions are downloaded; unset: a temporary folder, removed at exit."""
    host: str = Field("127.0.0.1", validation_alias="MLSERVER_HOST", json_schema_extra=PER_PROCESS)
    """The address MLServer binds. MLServer's own default is 0.0.0.0; loopback is the safe one outside containers."""
    http_port: int = Field(8080, ge=1, le=65535, validation_alias="MLSERVER_HTTP_PORT", json_schema_extra=PER_PROCESS)
    """V2 REST."""
    grpc_port: int = Field(8081, ge=1, le=65535, validation_alias="MLSERVER_GRPC_PORT", json_schema_extra=PER_PROCESS)
    """V2 gRPC."""
    metrics_port: int = Field(
        8082, ge=1, le=65535, validation_alias="MLSERVER_METRICS_PORT", json_schema_extra=PER_PROCESS
    )
    """Prometheus /metrics."""
    workers: int = Field(0, ge=0, le=16, validation_alias="MLSERVER_PARALLEL_WORKERS")
    """MLServer's inference worker processes; 0 runs inference in the server process itself, which is faster
    for this model than handing each request to a worker."""
    torch_threads: int = Field(1, ge=1, le=64, validation_alias="OMP_NUM_THREADS")
    """torch's intra-op threads in the server; 1 keeps the forward pass off the event loop's core."""
    debug: bool = Field(False, validation_alias="MLSERVER_DEBUG")
    """MLServer's debug mode: an access-log line per request, DEBUG logging and tracebacks in error answers.
    MLServer turns it on by default; off here, as in production."""
    direct_path: bool = Field(True, validation_alias="SANDBOX_SERVING_DIRECT_PATH")
    """Run a PyTorch model directly for requests that already match its signature, instead of through
    MLflow's pyfunc checks (services/serving/direct.py); other requests take MLflow's path either way. With
    SANDBOX_SERVING_FAST_TENSORS, a gRPC request of one such raw tensor, or a REST JSON request of one such tensor
    and nothing else, is answered straight from the protobuf or the JSON, without MLServer's data plane path or
    adaptive batching, in forward passes shared with the requests that arrive with it (services/serving/
    grpc_direct.py, rest_direct.py, shortcut.py)."""
    fast_tensors: bool = Field(True, validation_alias="SANDBOX_SERVING_FAST_TENSORS")
    """Read raw gRPC tensors and V2 binary REST tensors (tritonclient's default) with np.frombuffer instead of
    MLServer's Python lists, and answer the requests the direct path takes without MLServer's request path
    (services/serving/patches.py). Off: MLServer 1.7.1's own decoding, gRPC ModelInfer and REST route, which
    answers binary requests 422 (the request-size limit stays)."""
    gc_freeze: bool = Field(True, validation_alias="SANDBOX_SERVING_GC_FREEZE")
    """Keep the loaded model and libraries out of the garbage collector's full passes (gc.freeze; see
    services/serving/runtime.py): they stalled the server for long pauses under load."""
    max_batch_size: int = Field(16, ge=0, le=1024, validation_alias="MLSERVER_MODEL_MAX_BATCH_SIZE")
    """MLServer's adaptive batching: requests that arrive together run as one batch of up to this many
    requests (0 or 1: off). It caps the direct path's shared forward passes too (services/serving/shortcut.py),
    which wait for no one."""
    max_batch_time: float = Field(0.0002, ge=0, le=1, validation_alias="MLSERVER_MODEL_MAX_BATCH_TIME")
    """Seconds a request may wait for others to join its batch (see SANDBOX_SERVING_BATCHER). A lone request
    may wait this long, so it is kept well under the cost of one request."""
    batcher: Literal["sandbox", "mlserver"] = Field("sandbox", validation_alias="SANDBOX_SERVING_BATCHER")
    """Adaptive batching's policy. `sandbox`: a batch waits MLSERVER_MODEL_MAX_BATCH_TIME for more requests only
    when the batch before had more than one, and a batch of one request goes to the model as it came
    (services/serving/patches.py: one client at a time skips the batcher's wait, merge and split, 16 clients are
    batched as by MLServer's batcher; docs/performance.md); `mlserver`: MLServer 1.7.1's own."""
    max_request_bytes: int = Field(
        64 * 2**20, ge=4 * 2**20, le=2**31 - 1, validation_alias="SANDBOX_SERVING_MAX_REQUEST_BYTES"
    )
    """The largest request, in bytes, over either protocol: MLServer's `grpc_max_message_length` (gRPC answers
    RESOURCE_EXHAUSTED over it), and the REST body limit (413; services/serving/limits.py). gRPC's own default
    of 4 MiB refused a 1,500-image batch (4.7 MB) that REST served. 64 MiB holds 10,000 MNIST test images as
    JSON (51 to 58 MiB, measured) and as gRPC FP32 (30 MiB)."""
    env_manager: str = Field("local", validation_alias="SANDBOX_SERVING_ENV_MANAGER")
    """`mlflow models serve --env-manager`: local uses this image's or venv's packages; virtualenv builds the
    model's own environment from its logged requirements (needs pyenv and network access)."""
    registry_wait_seconds: float = Field(300.0, gt=0, validation_alias="SANDBOX_SERVING_REGISTRY_WAIT_SECONDS")
    """How long serving waits for the model version to exist in the registry (seconds)."""
    shutdown_grace_seconds: float = Field(10.0, gt=0, validation_alias="SANDBOX_SHUTDOWN_GRACE_SECONDS")
    """How long a service may take to stop before its process group is killed (seconds)."""

    @field_validator("env_manager")
    @classmethod
    def _check_env_manager(cls, value: str) -> str:
        if value not in ("local", "virtualenv", "uv", "conda"):
            raise ValueError(f"must be local, virtualenv, uv or conda, got {value!r}")
        return value

    @field_validator("webhook_address")
    @classmethod
    def _check_webhook_address(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value)  # raises ValueError naming the value
        return value

    @model_validator(mode="after")
    def _webhook_needs_a_secret(self) -> ServingSettings:
        if self.webhook_address and not self.webhook_secret:
            raise ValueError("SANDBOX_SERVING_WEBHOOK_ADDRESS is set: set SANDBOX_SERVING_WEBHOOK_SECRET too")
        return self

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServingSettings:
        ports = [self.http_port, self.grpc_port, self.metrics_port]
        if self.webhook_address:
            ports.append(split_host_port(self.webhook_address)[1])
        if len(set(ports)) != len(ports):
            raise ValueError(
                "MLSERVER_HTTP_PORT, MLSERVER_GRPC_PORT, MLSERVER_METRICS_PORT and the port of "
                f"SANDBOX_SERVING_WEBHOOK_ADDRESS must differ: {ports}"
            )
        return self

    @property
    def server_settings(self) -> dict[str, object]:
        """MLServer's server-wide settings.json. A file, not env vars: `mlflow models serve` overwrites
        MLSERVER_PARALLEL_WORKERS with its own worker count (at least 1), and the file takes precedence."""
        fields: dict[str, object] = {
            "parallel_workers": self.workers,
            "debug": self.debug,
            "grpc_max_message_length": self.max_request_bytes,
            # MLServer builds its model repository before its servers: this one installs the patches first.
            "model_repository_implementation": "services.serving.patches.SandboxModelRepository",
            "model_repository_implementation_args": {
                "fast_tensors": self.fast_tensors,
                "max_request_bytes": self.max_request_bytes,
                "batcher": self.batcher,
            },
        }
        return fields

    @property
    def runtime_settings(self) -> dict[str, object]:
        """Settings of services.serving.runtime, passed in each version's model-settings.json."""
        return {"direct_path": self.direct_path, "gc_freeze": self.gc_freeze}

    @property
    def model_settings(self) -> dict[str, object]:
        """Fields of each version's model-settings.json besides its name, runtime and version."""
        if self.max_batch_size <= 1:
            return {}
        return {"max_batch_size": self.max_batch_size, "max_batch_time": self.max_batch_time}

    @property
    def webhook_target(self) -> str | None:
        """The URL that MLflow posts webhook deliveries to; None without a webhook address."""
        if self.webhook_address is None:
            return None
        if self.webhook_url:
            return self.webhook_url
        host, port = split_host_port(self.webhook_address)
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.http_port}"

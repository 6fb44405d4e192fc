"""Settings of the model server, named as MLflow and MLServer name them where they have a name."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlops_sandbox.registry import MODEL_NAME_PATTERN, model_uri


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    tracking_uri: str = Field("http://127.0.0.1:5000", validation_alias="MLFLOW_TRACKING_URI")
    model_name: str = Field("pytorch_simplenn_mnist", pattern=MODEL_NAME_PATTERN, validation_alias="MODEL_NAME")
    model_ref: str = Field("@production", validation_alias="SERVING_MODEL_REF")
    """Which version to serve: a number (1) is pinned; an alias (@production) or a stage (Production) is
    followed: when it moves, the server reloads the new version in place."""
    poll_seconds: float = Field(2.0, gt=0, le=60, validation_alias="SERVING_POLL_SECONDS")
    """How often a followed alias is checked in the registry."""
    serving_dir: Path | None = Field(None, validation_alias="SERVING_DIR")
    """Where served versions are downloaded; unset: a temporary folder removed at exit."""
    host: str = Field("127.0.0.1", validation_alias="MLSERVER_HOST")
    """MLServer binds 0.0.0.0 unless told otherwise; loopback is the safe default outside containers."""
    http_port: int = Field(8080, ge=1, le=65535, validation_alias="MLSERVER_HTTP_PORT")
    grpc_port: int = Field(8081, ge=1, le=65535, validation_alias="MLSERVER_GRPC_PORT")
    metrics_port: int = Field(8082, ge=1, le=65535, validation_alias="MLSERVER_METRICS_PORT")
    workers: int = Field(0, ge=0, le=16, validation_alias="MLSERVER_PARALLEL_WORKERS")
    """MLServer inference worker processes; 0 runs inference in the server process itself. 0 by default:
    handing each request to a worker process costs more than this model's forward pass (measured with
    python -m tools.benchmark.serving on 2 cores: single image at 16 clients 322 -> 910 req/s, batch of 32
    3,749 -> 9,264 images/s, and one worker process (about 550 MiB RSS) fewer)."""
    torch_threads: int = Field(1, ge=1, le=64, validation_alias="OMP_NUM_THREADS")
    """torch's intra-op threads in the server. 1 by default: with 2 threads the forward pass of a batch of
    32 competed with the event loop on 2 cores and took about 5x longer (REST batch-32 876 -> 4,068 images/s,
    gRPC batch-32 at 16 clients 1,804 -> 6,535 images/s)."""
    debug: bool = Field(False, validation_alias="MLSERVER_DEBUG")
    """MLServer's debug mode: an access-log line per request, DEBUG logging and tracebacks in error
    answers. MLServer turns it on by default; off here, as in production: the log line and level checks
    took about 6 % of a single-image request (py-spy), and tracebacks are not for clients."""
    direct_path: bool = Field(True, validation_alias="SERVING_DIRECT_PATH")
    """Run a PyTorch model directly for requests that already match its signature, instead of through
    MLflow's pyfunc checks (services/serving/direct.py); other requests take MLflow's path either way."""
    gc_freeze: bool = Field(True, validation_alias="SERVING_GC_FREEZE")
    """Keep the loaded model and libraries out of the garbage collector's full passes (gc.freeze; see
    services/serving/runtime.py): they stalled the server for about 140 ms each, the p99 under load."""
    max_batch_size: int = Field(16, ge=0, le=1024, validation_alias="MLSERVER_MODEL_MAX_BATCH_SIZE")
    """MLServer's adaptive batching: requests that arrive together are run as one batch of up to this
    many requests (0 or 1: off). Measured: single images at 16 clients +50 % requests/s."""
    max_batch_time: float = Field(0.0002, ge=0, le=1, validation_alias="MLSERVER_MODEL_MAX_BATCH_TIME")
    """Seconds a request may wait for others to join its batch. Every lone request waits this long, so
    it is kept well under the cost of one request (about 0.7 ms): 1 ms measured 3x slower for one client."""
    env_manager: str = Field("local", validation_alias="SERVING_ENV_MANAGER")
    """local: use this image's or venv's packages; virtualenv: build the model's own environment."""
    registry_wait_seconds: float = Field(300.0, gt=0, validation_alias="SERVING_REGISTRY_WAIT_SECONDS")
    """How long to wait for the tracking server and for the model version to exist."""
    shutdown_grace_seconds: float = Field(10.0, gt=0, validation_alias="SHUTDOWN_GRACE_SECONDS")

    @field_validator("model_ref")
    @classmethod
    def _check_ref(cls, value: str) -> str:
        model_uri("x", value)  # raises ValueError with the accepted forms
        return value.strip()

    @field_validator("env_manager")
    @classmethod
    def _check_env_manager(cls, value: str) -> str:
        if value not in ("local", "virtualenv", "uv", "conda"):
            raise ValueError(f"must be local, virtualenv, uv or conda, got {value!r}")
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServingSettings:
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if len(set(ports)) != len(ports):
            raise ValueError(f"MLSERVER_HTTP_PORT, MLSERVER_GRPC_PORT and MLSERVER_METRICS_PORT must differ: {ports}")
        return self

    @property
    def server_settings(self) -> dict[str, object]:
        """MLServer's server-wide settings.json. A file, not env vars: `mlflow models serve` overwrites
        MLSERVER_PARALLEL_WORKERS with its own worker count (at least 1), and the file takes precedence."""
        return {"parallel_workers": self.workers, "debug": self.debug}

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
    def model_uri(self) -> str:
        return model_uri(self.model_name, self.model_ref)

    @property
    def follows(self) -> bool:
        """Whether the reference can move (alias or stage), as opposed to a pinned version number."""
        return not self.model_ref.isdigit()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.http_port}"

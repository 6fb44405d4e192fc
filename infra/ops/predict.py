"""Load a registered model and measure its accuracy on MNIST test images, in-process or from a V2 endpoint.

    python -m infra.ops.predict                              # models:/pytorch_simplenn_mnist/1, in-process
    python -m infra.ops.predict --model-ref @production -n 10000
    python -m infra.ops.predict --serving-url http://127.0.0.1:8080 -n 10000 --min-accuracy 0.975
    python -m infra.ops.predict --serving-url 127.0.0.1:8081 --protocol grpc

In-process, it loads the model as mlflow.pytorch.load_model does in MLflow's Model Registry documentation.
With a serving URL, it sends V2 inference requests (REST, or gRPC) and also reports latency percentiles.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import ValidationError

from mlops_sandbox.mnist import MnistUnavailable, load_test_set
from mlops_sandbox.references import model_uri
from mlops_sandbox.registry import RegistryError
from mlops_sandbox.settings import MnistSettings, ModelReference, TrackingClientSettings, command_name
from mlops_sandbox.tracking import connect
from mlops_sandbox.v2 import InferenceError, V2Client
from mlops_sandbox.waiting import DependencyUnavailable, on_stderr, wait_for

if TYPE_CHECKING:
    import torch

# torch and mlflow.pytorch are imported where they are used: a served run asks the server first and tells a
# wrong URL, port or model name before it imports torch and reads MNIST.


@dataclass(frozen=True)
class Evaluation:
    """Accuracy on `images` test images, and the latency of each request in milliseconds (served only)."""

    images: int
    correct: int
    latencies_ms: list[float]
    model_version: str | None = None

    @property
    def accuracy(self) -> float:
        return self.correct / self.images

    def summary(self) -> str:
        text = f"accuracy {self.accuracy:.4f} ({self.correct}/{self.images} test images)"
        if self.model_version:
            text += f", served version {self.model_version}"
        if self.latencies_ms:
            p50, p95, p99 = np.percentile(self.latencies_ms, [50, 95, 99])
            text += f"; {len(self.latencies_ms)} requests, latency p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms"
        return text


def evaluate_loaded(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Evaluation:
    """`model` on float32 images (N, 1, 28, 28) against int64 labels (N,), in one forward pass."""
    import torch

    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    return Evaluation(len(images), int((predicted == labels).sum()), [])


def evaluate_served(client: V2Client, images: np.ndarray, labels: np.ndarray, batch_size: int) -> Evaluation:
    """The endpoint on float32 images (N, 1, 28, 28), `batch_size` images per request, against labels (N,)."""
    correct, latencies, version = 0, [], None
    for start in range(0, len(images), batch_size):
        began = time.perf_counter()
        prediction = client.infer(images[start : start + batch_size])
        latencies.append((time.perf_counter() - began) * 1000)
        correct += int((prediction.digits == labels[start : start + batch_size]).sum())
        version = prediction.model_version
    return Evaluation(len(images), correct, latencies, version)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=command_name("infra.ops.predict"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model-ref", default="1", help="version (1), alias (@production) or stage (Production); default 1"
    )
    parser.add_argument("--model-uri", help="any URI MLflow loads (runs:/..., models:/...); overrides --model-ref")
    parser.add_argument(
        "--serving-url", help="a V2 endpoint, e.g. http://127.0.0.1:8080 (REST) or 127.0.0.1:8081 (gRPC)"
    )
    parser.add_argument(
        "--protocol",
        choices=("rest", "grpc"),
        default="rest",
        help="V2 over REST (http://host:port) or gRPC (host:port)",
    )
    parser.add_argument("--served-model", help="the model name on the server (default: SANDBOX_MODEL_NAME)")
    parser.add_argument("-n", "--images", type=int, default=1000, help="test images to evaluate (max 10000)")
    parser.add_argument("--batch-size", type=int, default=100, help="images per request (REST or gRPC)")
    parser.add_argument("--min-accuracy", type=float, help="exit 1 when accuracy is below this")
    parser.add_argument("--wait-seconds", type=float, default=60.0, help="how long to wait for the server")
    args = parser.parse_args(argv)
    if not 1 <= args.images <= 10_000:
        parser.error("--images must be 1 to 10000")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


class ModelNotLoaded(Exception):
    """MLflow could not load the model in-process; the message is MLflow's."""


def predict_served(args: argparse.Namespace, mnist: MnistSettings, model_name: str) -> Evaluation:
    """The endpoint's accuracy, also printed: the server is asked whether it is ready first, MNIST read after.

    DependencyUnavailable when it is not ready within --wait-seconds; InferenceError for an answer no wait
    repairs (a REST client at a gRPC port); MnistUnavailable.
    """
    client = V2Client(args.serving_url, args.served_model or model_name, protocol=args.protocol)
    wait_for(
        client.check_ready,
        service="model server",
        address=args.serving_url,
        timeout=args.wait_seconds,
        hint=(
            "--serving-url is the endpoint (the sandbox's production: http://127.0.0.1:8080 for REST, "
            "127.0.0.1:8081 for gRPC; `sandbox status` shows what runs); --served-model names the model on "
            "the server; --wait-seconds sets this wait."
        ),
        notice=on_stderr,
    )
    images, labels = load_test_set(mnist.root, download=mnist.download, limit=args.images)
    result = evaluate_served(client, images.numpy(), labels.numpy(), args.batch_size)
    print(f"{client.infer_url}: {result.summary()}")
    return result


def predict_in_process(args: argparse.Namespace, mnist: MnistSettings, model_name: str) -> Evaluation:
    """The registered model's accuracy, loaded here with mlflow.pytorch.load_model.

    DependencyUnavailable when the tracking server does not answer; RegistryError; ModelNotLoaded;
    MnistUnavailable.
    """
    import mlflow.pytorch

    images, labels = load_test_set(mnist.root, download=mnist.download, limit=args.images)
    connect(TrackingClientSettings(), notice=on_stderr)
    uri = args.model_uri or model_uri(model_name, args.model_ref)
    try:
        module = mlflow.pytorch.load_model(uri)
    except mlflow.exceptions.MlflowException as err:
        raise ModelNotLoaded(f"cannot load the model: {err.message}") from None
    result = evaluate_loaded(module, images, labels)
    print(f"{uri}: {result.summary()}")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        mnist, model = MnistSettings(), ModelReference()
        predict = predict_served if args.serving_url else predict_in_process
        result = predict(args, mnist, model.name)
    except (ValidationError, ValueError) as err:
        print(f"invalid input: {err}", file=sys.stderr)
        return 2
    except (MnistUnavailable, DependencyUnavailable, RegistryError, InferenceError, ModelNotLoaded) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.min_accuracy is not None and result.accuracy < args.min_accuracy:
        print(f"accuracy {result.accuracy:.4f} is below the required {args.min_accuracy:.4f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

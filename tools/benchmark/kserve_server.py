"""(e) of the serving benchmark: KServe's Python model server serving the registered MLflow model, V2 REST and gRPC.

    .venv-kserve/bin/python -m tools.benchmark.kserve_server --model_name NAME --model_uri models:/NAME/1 \\
        --http_port 8080 --grpc_port 8081

Runs in its own environment, `.venv-kserve` (tools/benchmark/kserve_env.py builds it): kserve's pins clash
with MLServer's. The model class is the one KServe's custom model server documentation shows, a
`kserve.Model` with `load()` and `predict()`, started by `ModelServer().start([model])`, which reads the
server's options (--http_port, --grpc_port, ...) from the command line. Inputs and outputs go through the
helpers KServe's own runtimes use (`get_predict_input`, `get_predict_response`: sklearnserver, xgbserver), so
V2 JSON, V2 binary REST and gRPC raw tensors are decoded and answered as KServe does it. Every other KServe
setting keeps its default, as (c) keeps MLServer's.

The model loads through MLflow, as (a), (c) and (d) do: `mlflow.pyfunc.load_model("models:/NAME/V")`
resolves the version in the registry at MLFLOW_TRACKING_URI and downloads its artifacts through the MLflow
server's artifact proxy.
"""

from __future__ import annotations

import argparse
from typing import Any

import mlflow.pyfunc
from kserve import InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.utils.utils import get_predict_input, get_predict_response


class MLflowModel(Model):
    """A registered MLflow model (`model_uri`, models:/NAME/VERSION) behind KServe's V2 endpoints as `name`.

    predict() takes the first input tensor (float32 images (N, 1, 28, 28) for this project's model) and answers
    one output tensor, `output-0`, with what the pyfunc model returns (float32 probabilities (N, 10)).
    """

    def __init__(self, name: str, model_uri: str) -> None:
        super().__init__(name)
        self.model_uri = model_uri
        self.model: Any = None
        # As KServe's documentation does: load at construction, so the server is ready when it starts.
        self.load()

    def load(self) -> bool:
        self.model = mlflow.pyfunc.load_model(self.model_uri)
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        return get_predict_response(payload, self.model.predict(get_predict_input(payload)), self.name)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_uri", required=True, help="the MLflow model to serve, models:/NAME/VERSION")
    args, _ = parser.parse_known_args()
    ModelServer().start([MLflowModel(args.model_name, args.model_uri)])


if __name__ == "__main__":
    main()

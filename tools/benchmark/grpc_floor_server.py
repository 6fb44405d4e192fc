"""The bare gRPC servers of tools/benchmark/grpc_floor.py: grpc.aio on uvloop with MLServer's protocol classes,
doing one layer more of (d)'s work each.

    python -m tools.benchmark.grpc_floor_server bare|forward|interceptor --port 9000 [--model-uri models:/NAME/1]

    bare         answers zeros of the answer's shape: the gRPC C core, grpc.aio and protobuf alone, no model
    forward      answers with the registered model's forward pass (mlflow.pytorch.load_model, torch on one
                 thread, the input read with np.frombuffer: as (d) runs it; MLFLOW_TRACKING_URI from the
                 environment)
    interceptor  forward, plus what (d) keeps of MLServer's gRPC layer: its Prometheus interceptor, and the
                 CloudEvents headers sent as trailing metadata

A process of its own: MLServer's protocol classes and tritonclient's (the load side's) register the same
protobuf names, and one process cannot hold both.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

MODEL = "pytorch_simplenn_mnist"
LAYERS = ("bare", "forward", "interceptor")


def serve(layer: str, port: int, model_uri: str | None) -> None:
    """Serve V2 gRPC ModelInfer on 127.0.0.1:`port` with `layer` of (d)'s work (see the module docstring) until
    stopped. Answers float32 (N, 10) as `output-1` in raw_output_contents to float32 (N, 1, 28, 28) sent as
    raw_input_contents. ValueError for an unknown layer, or `forward`/`interceptor` without `model_uri`."""
    import grpc
    import uvloop
    from mlserver.cloudevents import (
        CLOUDEVENTS_HEADER_ENDPOINT,
        CLOUDEVENTS_HEADER_ID,
        CLOUDEVENTS_HEADER_INFERENCE_SERVICE,
        CLOUDEVENTS_HEADER_MODEL_ID,
        CLOUDEVENTS_HEADER_REQUEST_ID,
        CLOUDEVENTS_HEADER_SOURCE,
        CLOUDEVENTS_HEADER_SPECVERSION,
        CLOUDEVENTS_HEADER_TYPE,
        CloudEventsTypes,
    )
    from mlserver.grpc import dataplane_pb2 as pb
    from mlserver.grpc import dataplane_pb2_grpc as pb_grpc
    from mlserver.grpc.interceptors import PromServerInterceptor
    from mlserver.utils import generate_uuid

    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; choose from {', '.join(LAYERS)}")
    predict: Callable[[np.ndarray], np.ndarray] = lambda images: np.zeros((len(images), 10), np.float32)  # noqa: E731
    if layer != "bare":
        if model_uri is None:
            raise ValueError(f"layer {layer!r} runs the model: give its URI")
        import mlflow.pytorch
        import torch

        torch.set_num_threads(1)  # as (d) ships (OMP_NUM_THREADS=1)
        module = mlflow.pytorch.load_model(model_uri).eval()

        def predict(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(images)).numpy()  # type: ignore[no-any-return]

    # The eight headers MLServer's CloudEvents middleware puts on every answer; (d) sends them as trailers.
    cloudevents = {
        CLOUDEVENTS_HEADER_SPECVERSION: "0.3",
        CLOUDEVENTS_HEADER_SOURCE: "io.seldon.serving.deployment.mlserver",
        CLOUDEVENTS_HEADER_TYPE: CloudEventsTypes.Response.value,
        CLOUDEVENTS_HEADER_MODEL_ID: MODEL,
        CLOUDEVENTS_HEADER_INFERENCE_SERVICE: "mlserver",
        CLOUDEVENTS_HEADER_ENDPOINT: MODEL,
    }
    content_type = {"content_type": pb.InferParameter(string_param="np")}

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802  (the V2 protocol's name)
            tensor = request.inputs[0]
            images = np.frombuffer(request.raw_input_contents[0], "<f4").reshape(tuple(tensor.shape))
            answer = predict(images)
            request_id = generate_uuid()
            if layer == "interceptor":
                headers = {**cloudevents, CLOUDEVENTS_HEADER_ID: request_id, CLOUDEVENTS_HEADER_REQUEST_ID: request_id}
                context.set_trailing_metadata(tuple((key.lower(), value) for key, value in headers.items()))
            output = pb.ModelInferResponse.InferOutputTensor(
                name="output-1", datatype="FP32", shape=answer.shape, parameters=content_type
            )
            return pb.ModelInferResponse(
                model_name=request.model_name,
                id=request_id,
                outputs=[output],
                raw_output_contents=[answer.astype("<f4").tobytes()],
                parameters=content_type,
            )

    async def run() -> None:
        interceptors = [PromServerInterceptor(enable_handling_time_histogram=True)] if layer == "interceptor" else []
        server = grpc.aio.server(interceptors=interceptors)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.install()  # as MLServer runs its servers
    asyncio.run(run())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("layer", choices=LAYERS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-uri", help="models:/NAME/VERSION, for forward and interceptor")
    args = parser.parse_args(argv)
    serve(args.layer, args.port, args.model_uri)


if __name__ == "__main__":
    main()

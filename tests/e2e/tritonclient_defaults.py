"""Ask a V2 server for the same MNIST-shaped batch three ways with tritonclient at its defaults, and print the
answers as JSON: HTTP with JSON tensors, HTTP with binary tensors (`set_data_from_numpy`'s default), gRPC.

    python -m tests.e2e.tritonclient_defaults HTTP_URL GRPC_TARGET MODEL

Run as its own process: tritonclient.grpc and mlserver register the same protobuf names, so one process
cannot import both (mlops_sandbox/v2.py), and the test process imports mlserver.
"""

from __future__ import annotations

import base64
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from mlops_sandbox.v2 import INPUT_NAME


def main(http_url: str, grpc_target: str, model: str) -> None:
    images = np.random.default_rng(15).random((32, 1, 28, 28), dtype=np.float32)
    answers: dict[str, object] = {}
    http = httpclient.InferenceServerClient(http_url.removeprefix("http://"))
    for mode, binary in (("http-json", False), ("http-binary", True)):
        tensor = httpclient.InferInput(INPUT_NAME, list(images.shape), "FP32")
        tensor.set_data_from_numpy(images, binary_data=binary)
        outputs = None if binary else [httpclient.InferRequestedOutput("output-0", binary_data=False)]
        result = http.infer(model, [tensor], outputs=outputs)
        name = result.get_response()["outputs"][0]["name"]
        answers[mode] = base64.b64encode(result.as_numpy(name).astype("<f4").tobytes()).decode()
        answers[f"{mode}-output-parameters"] = result.get_output(name).get("parameters", {})
    grpc = grpcclient.InferenceServerClient(grpc_target)
    tensor = grpcclient.InferInput(INPUT_NAME, list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    result = grpc.infer(model, [tensor])
    name = result.get_response().outputs[0].name
    answers["grpc"] = base64.b64encode(result.as_numpy(name).astype("<f4").tobytes()).decode()
    print(json.dumps(answers))


if __name__ == "__main__":
    main(*sys.argv[1:4])

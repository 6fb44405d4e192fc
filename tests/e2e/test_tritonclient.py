"""tritonclient, the most used V2 client, at its defaults against the served model: HTTP with binary tensors
(the V2 binary tensor data extension), and gRPC with raw tensors, answer exactly as HTTP with JSON does."""

from __future__ import annotations

import base64
import json

import numpy as np

from tests.e2e.conftest import MODEL, Stack
from tests.support import run_module


def probabilities(encoded: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(encoded), dtype="<f4").reshape(-1, 10)


def test_tritonclient_defaults_binary_http_and_grpc_answer_as_json_does(stack: Stack) -> None:
    asked = run_module(
        "tests.e2e.tritonclient_defaults",
        stack.serving_url,
        f"127.0.0.1:{stack.grpc_port}",
        MODEL,
        env=stack.client_env(),
    )
    assert asked.returncode == 0, asked.stderr[-3000:]
    answers = json.loads(asked.stdout.strip().splitlines()[-1])
    as_json = probabilities(answers["http-json"])
    assert as_json.shape == (32, 10) and np.allclose(as_json.sum(axis=1), 1, atol=1e-4)
    assert "binary_data_size" not in answers["http-json-output-parameters"]
    assert answers["http-binary-output-parameters"]["binary_data_size"] == 32 * 10 * 4, "the answer came back binary"
    assert np.array_equal(probabilities(answers["http-binary"]), as_json)
    assert np.array_equal(probabilities(answers["grpc"]), as_json)

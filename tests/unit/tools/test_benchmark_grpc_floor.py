"""tools/benchmark/grpc_floor.py: its bare server answers V2 gRPC under h2load as the real servers do, a wrong
layer fails with the server's own message, and the table puts (d) against (e) round by round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlserver.grpc import dataplane_pb2 as pb

from tools.benchmark import load
from tools.benchmark.grpc_floor import bare_server, markdown

# The bare layer loads no model: the registry address is never dialled.
UNUSED_REGISTRY = "http://127.0.0.1:9"


def request(images: int) -> bytes:
    tensor = pb.ModelInferRequest.InferInputTensor(name="input-0", datatype="FP32", shape=[images, 1, 28, 28])
    pixels = np.random.default_rng(0).random((images, 1, 28, 28), np.float32).astype("<f4").tobytes()
    return pb.ModelInferRequest(
        model_name="pytorch_simplenn_mnist", inputs=[tensor], raw_input_contents=[pixels]
    ).SerializeToString()


def test_bare_server_answers_batches_under_load(tmp_path: Path) -> None:
    batch = request(32)
    with bare_server("bare", UNUSED_REGISTRY, "models:/pytorch_simplenn_mnist/1", tmp_path, request(1)) as target:
        answer = pb.ModelInferResponse.FromString(load.grpc_call(target, batch))
        measured = load.grpc_infer(target, batch, clients=2, seconds=1, batch=32)
    assert list(answer.outputs[0].shape) == [32, 10] and len(answer.raw_output_contents[0]) == 32 * 10 * 4
    assert measured.errors == 0
    assert measured.requests > 10


def test_unknown_layer_fails_with_the_servers_message(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="invalid choice: 'tensorrt'"):
        with bare_server("tensorrt", UNUSED_REGISTRY, "models:/pytorch_simplenn_mnist/1", tmp_path, request(1)):
            pass


def test_table_gives_medians_and_d_against_e_round_by_round() -> None:
    rounds = {"bare": [5000.0, 4000.0, 4600.0], "(d)": [1500.0, 1800.0, 1600.0], "(e)": [1000.0, 1500.0, 1600.0]}
    results = {(1, 16): rounds}
    table = markdown(results, ["bare", "(d)", "(e)"])
    row = table.splitlines()[2]
    assert row.startswith("| one image, 16 clients | 4,600 (4,000-5,000) | 1,600 (1,500-1,800) |")
    # Each round's (d) against the same round's (e): 1.5, 1.2, 1.0; not max(d) / min(e).
    assert row.endswith("| 1.00-1.50 |")

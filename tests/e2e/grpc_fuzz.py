"""Fuzz a served model's V2 gRPC `ModelInfer` with generated requests; print the status codes as one JSON line.

    python -m tests.e2e.grpc_fuzz HOST:PORT MODEL EXAMPLES

The REST fuzz (test_fuzz.py) generates from MLServer's OpenAPI document; gRPC has none, so the requests are
generated here from the V2 protocol's own fields, with hypothesis: zero to two inputs, any V2 datatype, shapes
with negative, zero and huge dimensions, typed contents of the wrong kind or length, raw contents that do or do
not fill their shape, unknown model names and versions. Among them, the malformed requests the REST tests send
(wrong shape, strings, data that do not fill the shape, a negative dimension, no inputs).

Run in a process of its own: MLServer's generated protobuf classes, which this uses, and tritonclient's
register the same names, and a test session imports tritonclient.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc import dataplane_pb2_grpc

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BYTES", "", "FP8", "STRING"]  # fmt: skip
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
FAILED_BY_THE_SERVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}

dimension = st.one_of(st.integers(-3, 4), st.sampled_from([28, 784, 10_000, 2**31, -(2**40)]))


@st.composite
def tensor(draw: st.DrawFn) -> tuple[pb.ModelInferRequest.InferInputTensor, bytes | None]:
    """One input: its metadata and typed contents, or None contents and raw bytes instead."""
    datatype = draw(st.sampled_from(DATATYPES))
    shape = draw(st.lists(dimension, max_size=5))
    item = pb.ModelInferRequest.InferInputTensor(name=draw(st.sampled_from(["input-0", "", "x"])), datatype=datatype)
    item.shape.extend(shape)
    if draw(st.booleans()):
        size = draw(st.integers(0, 3_200))
        return item, draw(st.binary(min_size=size, max_size=size))
    field = CONTENTS_FIELD.get(datatype) or draw(st.sampled_from(sorted(set(CONTENTS_FIELD.values()))))
    count = draw(st.integers(0, 900))
    contents = getattr(item.contents, field)
    if field == "bytes_contents":
        contents.extend([b"x"] * count)
    elif field == "bool_contents":
        contents.extend([True] * count)
    elif field.startswith("fp"):
        contents.extend(draw(st.lists(st.floats(allow_nan=True, width=32), min_size=count, max_size=count)))
    elif field.startswith("uint"):
        contents.extend([draw(st.integers(0, 255))] * count)
    else:
        contents.extend([draw(st.integers(-128, 127))] * count)
    return item, None


@st.composite
def request(draw: st.DrawFn, model: str) -> pb.ModelInferRequest:
    inputs = draw(st.lists(tensor(), max_size=2))
    message = pb.ModelInferRequest(
        model_name=draw(st.sampled_from([model, model, model, "", "no-such-model"])),
        model_version=draw(st.sampled_from(["", "", "0", "999"])),
    )
    for item, raw in inputs:
        message.inputs.append(item)
        if raw is not None:
            message.raw_input_contents.append(raw)
    if draw(st.booleans()) and message.raw_input_contents:
        message.raw_input_contents.append(b"\x00" * draw(st.integers(0, 64)))  # one raw entry too many
    return message


def malformed(model: str) -> list[pb.ModelInferRequest]:
    """The REST tests' malformed requests, over gRPC."""

    def one(shape: list[int], datatype: str, field: str, values: list) -> pb.ModelInferRequest:
        item = pb.ModelInferRequest.InferInputTensor(name="input-0", datatype=datatype, shape=shape)
        getattr(item.contents, field).extend(values)
        return pb.ModelInferRequest(model_name=model, inputs=[item])

    return [
        one([1, 3], "FP32", "fp32_contents", [1.0, 2.0, 3.0]),
        one([1, 1, 28, 28], "BYTES", "bytes_contents", [b"x"] * 784),
        one([1, 1, 28, 28], "FP32", "fp32_contents", [0.5] * 10),
        one([-1, 1, 28, 28], "FP32", "fp32_contents", [0.5] * 784),
        pb.ModelInferRequest(model_name=model),
    ]


def main(target: str, model: str, examples: int) -> dict[str, object]:
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 2**31 - 1)])
    stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)
    statuses: Counter[str] = Counter()
    failures: dict[str, str] = {}

    def send(message: pb.ModelInferRequest) -> None:
        try:
            stub.ModelInfer(message, timeout=30)
            statuses["OK"] += 1
        except grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
            statuses[code.name] += 1
            if code in FAILED_BY_THE_SERVER:
                details = err.details()  # type: ignore[attr-defined]
                failures.setdefault(f"{code.name}: {details[:60]}", f"{details}: {str(message)[:300]}")

    for message in malformed(model):
        send(message)

    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(message=request(model))
    def fuzz(message: pb.ModelInferRequest) -> None:
        send(message)

    fuzz()
    ready = stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=10).ready
    channel.close()
    return {"statuses": dict(statuses), "failures": failures, "ready": ready}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))

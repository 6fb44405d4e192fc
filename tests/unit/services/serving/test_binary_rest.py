"""The V2 binary tensor data extension in front of MLServer's REST app (services/serving/binary_rest.py), with
requests written and answers read by tritonclient.http itself, through MLServer's real app, data plane and
the sandbox's runtime (no server is started: the ASGI app is called directly)."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
from mlserver.rest.server import RESTServer

from tests.unit.services.serving.conftest import Plane
from tests.unit.services.serving.test_runtime import IMAGES

INFER = "/v2/models/digits/infer"


async def post(app: object, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One HTTP POST through the ASGI `app`: status, response headers, body."""
    sent = [{"type": "http.request", "body": body, "more_body": False}]
    answer: dict[str, object] = {"body": b""}

    async def receive() -> dict[str, object]:
        return sent.pop(0) if sent else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], message["headers"]
        elif message["type"] == "http.response.body":
            answer["body"] = bytes(answer["body"]) + message.get("body", b"")  # type: ignore[call-overload,operator]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(key.lower().encode(), value.encode()) for key, value in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)  # type: ignore[operator]
    fields = {key.decode(): value.decode() for key, value in answer["headers"]}  # type: ignore[attr-defined]
    return int(answer["status"]), fields, bytes(answer["body"])  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def app(plane: Plane) -> object:
    """MLServer's REST app, built as `mlserver start` builds it once the patches are installed."""
    return RESTServer(plane.settings, plane.data_plane, plane.handlers)._app


def serve(app: object, requests: list[tuple[bytes, dict[str, str]]]) -> list[tuple[int, dict[str, str], bytes]]:
    async def run() -> list[tuple[int, dict[str, str], bytes]]:
        return [await post(app, INFER, body, headers) for body, headers in requests]

    return asyncio.run(run())


def triton_request(
    images: np.ndarray, *, binary: bool, binary_output: bool | None = None
) -> tuple[bytes, dict[str, str]]:
    tensor = httpclient.InferInput("input-0", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=binary)
    outputs = (
        None if binary_output is None else [httpclient.InferRequestedOutput("output-0", binary_data=binary_output)]
    )
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor], outputs=outputs)
    headers = {"content-type": "application/json"}
    if json_size is not None:
        headers = {"content-type": "application/octet-stream", "Inference-Header-Content-Length": str(json_size)}
    return body, headers


def as_numpy(answer: tuple[int, dict[str, str], bytes]) -> np.ndarray:
    status, headers, body = answer
    assert status == 200, body
    length = headers.get("inference-header-content-length")
    result = httpclient.InferenceServerClient.parse_response_body(body, header_length=int(length) if length else None)
    document = result.get_response()
    assert document["model_version"] == "7"
    return result.as_numpy(document["outputs"][0]["name"])


def test_tritonclients_default_binary_request_gets_the_json_answer_bit_for_bit(app: object) -> None:
    binary, as_json, binary_in_json_out = serve(
        app,
        [
            triton_request(IMAGES, binary=True),  # tritonclient's default: binary in, every output binary
            triton_request(IMAGES, binary=False, binary_output=False),  # plain JSON, answered by MLServer
            triton_request(IMAGES, binary=True, binary_output=False),
        ],
    )
    assert binary[1]["content-type"] == "application/octet-stream"
    assert int(binary[1]["inference-header-content-length"]) < len(binary[2])
    assert "inference-header-content-length" not in as_json[1]
    expected = as_numpy(as_json)
    assert expected.shape == (3, 10) and expected.dtype == np.float32
    assert np.array_equal(as_numpy(binary), expected)
    assert "inference-header-content-length" not in binary_in_json_out[1]
    assert np.array_equal(as_numpy(binary_in_json_out), expected)


def bad(body: bytes, length: object) -> tuple[bytes, dict[str, str]]:
    return body, {"Inference-Header-Content-Length": str(length)}


GOOD, GOOD_LENGTH = triton_request(IMAGES, binary=True)
HEADER = orjson.loads(GOOD[: int(GOOD_LENGTH["Inference-Header-Content-Length"])])


def with_header(**changes: object) -> bytes:
    header = orjson.dumps({**HEADER, **changes})
    return header


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (bad(GOOD, len(GOOD) + 1), "outside the request body"),
        (bad(GOOD, "ten"), "must be a number of bytes"),
        (bad(b"{not json" + IMAGES.tobytes(), 9), "are not JSON"),
        (bad(GOOD[:-4], GOOD_LENGTH["Inference-Header-Content-Length"]), "runs past the body"),
        (bad(GOOD + b"\0\0\0\0", GOOD_LENGTH["Inference-Header-Content-Length"]), "4 bytes after its JSON header"),
        (
            bad(
                with_header(inputs=[{**HEADER["inputs"][0], "parameters": {"binary_data_size": 9404}}])
                + IMAGES.tobytes()[:-4],
                len(with_header(inputs=[{**HEADER["inputs"][0], "parameters": {"binary_data_size": 9404}}])),
            ),
            "needs 9408 bytes, the request carries 9404",
        ),
        (bad(b"[1, 2]", 6), "must be an object"),
        (bad(with_header(inputs="x"), len(with_header(inputs="x"))), "validation error"),
    ],
    ids=[
        "length-past-body",
        "length-not-a-number",
        "bad-json",
        "truncated",
        "extra-bytes",
        "size-mismatch",
        "not-an-object",
        "not-v2",
    ],
)
def test_a_body_that_does_not_match_its_header_is_a_400_with_the_reason(
    app: object, request_: tuple[bytes, dict[str, str]], reason: str
) -> None:
    [(status, headers, body)] = serve(app, [request_])
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert reason in orjson.loads(body)["error"]

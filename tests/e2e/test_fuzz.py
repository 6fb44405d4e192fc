"""Fuzzing the served model's V2 REST API from the OpenAPI document MLServer serves for it, with schemathesis:
every operation, valid and invalid requests, and not one answer may be a 5xx; the server stays ready.

MLServer 1.7.1's document declares `"type": "bytes"` for BYTES tensors' data, which is not an OpenAPI type,
and schemathesis refuses the document as it is; the test reads it as `string`, what JSON carries bytes as.

The streaming operations (`infer_stream`, `generate`, `generate_stream`) are fuzzed too: MLServer 1.7.1
serves them for every model and sends their 200 before the model runs, so a request the model refused ended
in a 500 there (`{"inputs": []}`); the sandbox's server answers them 404 instead, since its models do not
stream (services/serving/streaming.py).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.openapi import from_dict

from tests.e2e.conftest import MODEL, Stack
from tests.support import run_module

pytestmark = pytest.mark.e2e

EXAMPLES_PER_OPERATION = 150
"""Generated requests at most per operation and mode (valid and invalid requests); operations with few
inputs have fewer distinct requests to make."""


def fixed_types(node: Any) -> Any:
    """The document with every `"type": "bytes"` read as `"type": "string"`."""
    if isinstance(node, dict):
        return {k: ("string" if k == "type" and v == "bytes" else fixed_types(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [fixed_types(v) for v in node]
    return node


def test_fuzzed_v2_requests_get_no_server_error_and_the_server_stays_ready(stack: Stack) -> None:
    document = requests.get(f"{stack.serving_url}/v2/models/{MODEL}/docs/dataplane.json", timeout=10).json()
    schema = from_dict(fixed_types(document))
    session = requests.Session()
    statuses: Counter[int] = Counter()
    server_errors: dict[str, str] = {}
    no_invalid: list[str] = []

    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid operation raises here, as it should
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode, path_parameters={"model_name": MODEL}))
            def send(case: Any) -> None:
                response = case.call(base_url=stack.serving_url, session=session, timeout=30)
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    key = f"{case.operation.label} -> {response.status_code}"
                    server_errors.setdefault(key, f"{case.as_curl_command()}\n{response.text[:300]}")

            try:
                send()
            except Unsatisfiable:
                # An operation whose only input is the fixed model name has no invalid request to make.
                assert mode is GenerationMode.NEGATIVE, operation.label
                no_invalid.append(operation.label)

    total = sum(statuses.values())
    client_errors = sum(n for status, n in statuses.items() if 400 <= status < 500)
    print(f"\n{total} fuzzed requests: {client_errors} answered 4xx, {len(server_errors)} kinds of 5xx")
    print(f"by status: {dict(sorted(statuses.items()))}; no invalid request exists for: {', '.join(no_invalid)}")
    assert not server_errors, "\n\n".join(f"{key}:\n{example}" for key, example in server_errors.items())
    assert total >= 2_000
    assert requests.get(f"{stack.serving_url}/v2/models/{MODEL}/ready", timeout=5).status_code == 200


def test_fuzzed_grpc_requests_get_no_server_error_and_the_server_stays_ready(stack: Stack) -> None:
    # gRPC has no OpenAPI document: tests/e2e/grpc_fuzz.py generates ModelInfer requests from the protocol's
    # fields, the REST tests' malformed requests among them, in a process of its own.
    fuzzed = run_module("tests.e2e.grpc_fuzz", f"127.0.0.1:{stack.grpc_port}", MODEL, "600", env=stack.client_env())
    assert fuzzed.returncode == 0, fuzzed.stderr[-3000:]
    result = json.loads(fuzzed.stdout.strip().splitlines()[-1])
    statuses: dict[str, int] = result["statuses"]
    print(f"\n{sum(statuses.values())} fuzzed gRPC requests: {dict(sorted(statuses.items()))}")
    assert not result["failures"], "\n\n".join(f"{kind}\n{example}" for kind, example in result["failures"].items())
    assert sum(statuses.values()) >= 600 and statuses.get("INVALID_ARGUMENT", 0) > 0, statuses
    assert result["ready"]

"""A client of the V2 (Open Inference) protocol, over REST or gRPC, built on NVIDIA's `tritonclient`.

tritonclient speaks the V2 protocol to any server that implements it (MLServer here, KServe or Triton
elsewhere), so the clients of this project survive a change of server. Two things are set for MLServer:

- REST requests and answers are JSON (`binary_data=False`): MLServer 1.7.1 does not implement the binary
  tensor extension that tritonclient sends by default (the sandbox's serving adds it: services/serving/
  binary_rest.py; this client also talks to stock MLServer).
- tritonclient's gRPC module is imported only when a gRPC client is made: its generated protocol classes and
  MLServer's register the same names (`inference.ModelInferRequest`, ...) in protobuf's default pool, so a
  process that has imported `mlserver` cannot import `tritonclient.grpc`, and the reverse.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from mlops_sandbox.waiting import NotReadyYet

Protocol = Literal["rest", "grpc"]
INPUT_NAME = "input-0"
LABELS_HEADER = "x-sandbox-labels"
"""The request header (gRPC: metadata key) in which the sandbox's traffic generator sends the true digit of
each image, comma-separated in batch order ("7,2,1"). Serving never predicts with it: it only counts, per
version, which predictions were right. That is how a shadow copy, whose answers no client sees, gets an online
accuracy; production systems join labels that arrive later to logged predictions by request id instead."""


class InferenceError(RuntimeError):
    """The server refused or failed a request, or could not be reached; the message carries its answer."""


class WrongProtocol(InferenceError):
    """The port answers the other V2 protocol (REST's HTTP/1.1 where gRPC was asked, or the reverse): a mistake
    in the address that no wait repairs, so a readiness probe raises it at once instead of retrying."""


PORTS_HINT = "V2 servers take REST and gRPC on different ports (MLServer's defaults: REST 8080, gRPC 8081)"


@dataclass(frozen=True)
class Prediction:
    """One answer: class probabilities, float32 (N, 10), and the name and registry version that answered."""

    probabilities: np.ndarray
    model_name: str
    model_version: str | None

    @property
    def digits(self) -> np.ndarray:
        """The predicted digit of each image, int64 (N,)."""
        return self.probabilities.argmax(axis=1)


def fp32_input(module: Any, images: np.ndarray) -> Any:
    """A tritonclient input tensor (`module` is tritonclient.http or .grpc) for float32 images (N, 1, 28, 28)."""
    batch = np.ascontiguousarray(images, dtype=np.float32)
    tensor = module.InferInput(INPUT_NAME, list(batch.shape), "FP32")
    if module is httpclient:
        tensor.set_data_from_numpy(batch, binary_data=False)
    else:
        tensor.set_data_from_numpy(batch)
    return tensor


def rest_request_body(images: np.ndarray) -> bytes:
    """The JSON body of a V2 REST inference request for float32 images (N, 1, 28, 28) whose answer is JSON too:
    tritonclient's JSON body without the request parameter `"binary_data_output": true` that it adds when no
    output is named. MLServer 1.7.1 ignores that parameter in a JSON request; KServe's server honours it and
    answers with binary outputs, which a reader of JSON answers cannot parse. Without parameters, the sandbox's
    serving answers it on its direct path (services/serving/rest_direct.py).

    For load generators and tests that send the same request many times.
    """
    body, _ = httpclient.InferenceServerClient.generate_request_body([fp32_input(httpclient, images)])
    document = json.loads(body)
    parameters = document.pop("parameters", {})
    parameters.pop("binary_data_output", None)
    if parameters:
        document["parameters"] = parameters
    return json.dumps(document, separators=(",", ":")).encode()


class V2Client:
    """A V2 endpoint serving `model`: REST at `url` (http://host:port), or gRPC at `url` (host:port).

    Raises InferenceError, with the server's answer, for a refused request or an unreachable server.
    """

    def __init__(self, url: str, model: str, *, protocol: Protocol = "rest", timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.protocol = protocol
        self.timeout = timeout
        address = urlparse(self.url).netloc if "://" in self.url else self.url
        if protocol == "grpc":
            import tritonclient.grpc as grpcclient  # see the module docstring for why it is imported here

            self.module: Any = grpcclient
            self.client: Any = grpcclient.InferenceServerClient(address)
        else:
            self.module = httpclient
            self.client = httpclient.InferenceServerClient(address, connection_timeout=timeout, network_timeout=timeout)

    @property
    def infer_url(self) -> str:
        """Where requests go, as a user would write it."""
        if self.protocol == "grpc":
            return f"grpc://{self.url} ({self.model})"
        return f"{self.url}/v2/models/{self.model}/infer"

    def _call(self, method: str, *args: Any) -> Any:
        # gRPC calls wait forever unless told otherwise; REST ones time out by the client's network_timeout.
        kwargs = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except InferenceServerException as err:
            # gRPC's own words for an HTTP/1.1 server at the address (grpc's chttp2 transport).
            if "http1.x server" in (err.message() or ""):
                raise WrongProtocol(
                    f"{self.infer_url}: this port answers HTTP/1.1, not gRPC: is it the REST port? {PORTS_HINT}"
                ) from err
            raise InferenceError(f"{self.infer_url}: {err.message()} (status {err.status()})") from err
        except http.client.HTTPException as err:  # geventhttpclient's parser: the answer was not HTTP/1.x
            raise WrongProtocol(
                f"{self.infer_url}: this port does not answer HTTP/1.1 ({err}): is it the gRPC port? {PORTS_HINT}"
            ) from err
        except OSError as err:  # connection refused or reset, REST timeouts (gevent's and socket's)
            raise InferenceError(f"{self.infer_url}: {err}") from err

    def check_ready(self) -> None:
        """Return when the model answers ready; otherwise raise NotReadyYet (a probe for wait_for) saying why, as a
        person can act on it: the connection error, or the server's own answer (e.g. "Model mnist not found
        (status 404)"). V2 REST's ready endpoint answers a bare status, so the model's metadata is asked for the
        reason. WrongProtocol, which no wait repairs, is raised as it is."""
        try:
            if self._call("is_model_ready", self.model):
                return
            self._call("get_model_metadata", self.model)
        except WrongProtocol:
            raise
        except InferenceError as err:
            raise NotReadyYet(str(err)) from err
        raise NotReadyYet(f"{self.infer_url}: the server knows the model, which is not ready yet")

    def served_version(self) -> str | None:
        """The registry version the endpoint serves now, from the model's metadata; None when unreachable."""
        try:
            metadata = self._call("get_model_metadata", self.model)
        except InferenceError:
            return None
        versions = metadata["versions"] if isinstance(metadata, dict) else list(metadata.versions)
        return str(versions[0]) if versions else None

    def infer(self, images: np.ndarray) -> Prediction:
        """Class probabilities for float32 images (N, 1, 28, 28) in [0, 1]."""
        result = self._call("infer", self.model, [fp32_input(self.module, images)])
        response = result.get_response()
        if isinstance(response, dict):
            name, version, output = response.get("model_name"), response.get("model_version"), response["outputs"][0]
            output_name = output["name"]
        else:
            name, version, output_name = response.model_name, response.model_version, response.outputs[0].name
        probabilities = result.as_numpy(output_name)
        if probabilities is None:
            raise InferenceError(f"{self.infer_url}: the answer has no output {output_name!r}")
        return Prediction(np.asarray(probabilities, dtype=np.float32), name or self.model, version or None)

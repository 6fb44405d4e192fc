"""The MLServer runtime that serves registered models: MLServer's MLflow runtime, plus the registry version.

The version is carried in the model settings (`parameters.extra.registry_version`), not in MLServer's own
version field: MLServer treats a new version as a second model and keeps the highest number as default,
which would make rollbacks impossible; an unversioned model is reloaded in place instead (the new copy is
loaded before the old one is released). This runtime puts the registry version back where users look:
in every V2 response's `model_version` and in a Prometheus counter label.

Two per-request costs are cut here, each switchable in the model settings' `parameters.extra`:
- `direct_path`: requests that already match a PyTorch model's signature skip MLflow's per-request
  checks (services/serving/direct.py).
- `gc_freeze`: once a model is loaded, everything alive is moved out of the garbage collector's sight
  (gc.freeze). The server holds millions of long-lived objects (torch, mlflow, pydantic); every full
  collection walked them all and stalled the event loop for about 140 ms, which set the p99 latency under
  load (adaptive batching, 16 clients: p99 147 ms -> 10 ms, measured side by side). Frozen objects are
  still freed by reference counting; on unload everything is unfrozen and collected, so cycles left by
  an old version are reclaimed. A reload in place only freezes the new copy: the full collection there
  took about 0.4 s of a 0.45 s reload and kept the new version from answering that long; MLServer
  unloads the old copy (and so collects) only once the new one serves.
"""

from __future__ import annotations

import functools
import gc
import math
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput
from mlserver.utils import get_model_uri
from mlserver_mlflow import MLflowRuntime
from mlserver_mlflow.codecs import TensorDictCodec
from prometheus_client import Counter

from mlops_sandbox.v2 import LABELS_HEADER
from services.serving.direct import DirectTorchModel
from services.serving.heap import HeapTrimmer
from services.serving.metrics import FAILED_REQUESTS, LABELLED_PREDICTIONS, SERVED_REQUESTS
from services.serving.shortcut import Gathered
from services.serving.tensors import TensorBytesError, from_bytes, model_params


def count_values(data: Any) -> int:
    """How many values `data` holds, at any depth of nesting (a V2 tensor's data may be flat or nested, as
    numpy would read it). ValueError for what a numeric V2 tensor cannot carry (an object, a string)."""
    if isinstance(data, np.ndarray):
        return data.size  # raw gRPC or binary REST bytes, read as a flat array (services/serving/tensors.py)
    if isinstance(data, dict):
        raise ValueError("a tensor's data is a list of values, not an object")
    if isinstance(data, str):  # BYTES tensors, whose values are strings, are not counted
        raise ValueError(f"a tensor's data is a list of values, not a string ({data[:20]!r})")
    if not isinstance(data, (list, tuple)):
        return 1
    containers = (list, tuple, dict)
    if data and not isinstance(data[0], containers) and not isinstance(data[-1], containers):
        return len(data)  # flat, the common case, not walked (a ragged list fails to decode later)
    return sum(count_values(value) for value in data)


def v2_problem(tensor: RequestInput) -> str | None:
    """What breaks the V2 protocol's rules in one input tensor, or None: a shape is one or more non-negative
    integers (the first is the batch), whose product is the number of values the data carries (BYTES data are
    strings, not checked here). From the Open Inference Protocol's tensor definition (kserve/open-inference-
    protocol, "Tensor Data")."""
    shape = list(tensor.shape)
    if not shape:
        return f"input {tensor.name!r} declares shape []: a tensor has at least one dimension, the batch"
    if any(dimension < 0 for dimension in shape):
        return f"input {tensor.name!r} declares shape {shape}: the V2 protocol allows no negative dimension"
    if tensor.datatype == "BYTES":
        return None
    try:
        values = count_values(getattr(tensor.data, "root", tensor.data))
    except ValueError as err:
        return f"input {tensor.name!r}: {err}"
    if values != math.prod(shape):
        return f"input {tensor.name!r} declares shape {shape} ({math.prod(shape)} values) but carries {values}"
    return None


def labels_of(payload: InferenceRequest, images: int) -> np.ndarray | None:
    """The true digits the request carries in its LABELS_HEADER (int64 (images,)), or None (see labels_in)."""
    headers = (payload.parameters.headers if payload.parameters else None) or {}
    text = next((str(value) for key, value in headers.items() if key.lower() == LABELS_HEADER), None)
    return labels_in(text, images)


def labels_in(text: str | None, images: int) -> np.ndarray | None:
    """The true digits in a LABELS_HEADER value `text` (int64 (images,)), or None when there is none or they are
    not one digit per image: a malformed header is counted nowhere, and never fails the request it came with."""
    if not text:
        return None
    try:
        labels = np.array([int(part) for part in text.split(",")], dtype=np.int64)
    except ValueError:
        return None
    return labels if len(labels) == images and ((labels >= 0) & (labels <= 9)).all() else None


HEAP_TRIMMER = HeapTrimmer()
"""One per process: the heap is the process's, whichever model a request went to."""


class RegistryModelRuntime(MLflowRuntime):
    """MLServer's MLflow runtime that answers with the registry version, takes the direct path, and freezes the GC."""

    direct: DirectTorchModel | None = None
    gathered: Gathered
    """The shortcuts' forward passes (services/serving/shortcut.py)."""
    served: Counter
    refused: Counter
    failed: Counter

    def __setattr__(self, name: str, value: object) -> None:
        # MLServer's adaptive batching replaces `predict` with a wrapper that merges requests before any code of
        # this class runs, and answers a request of shape [] with a 500 (an IndexError on its batch axis). So
        # whatever `predict` becomes, every request is checked against the V2 rules before it.
        if name == "predict" and callable(value):
            value = self._checked(value)  # type: ignore[arg-type]
        super().__setattr__(name, value)

    def _checked(
        self, predict: Callable[[InferenceRequest], Awaitable[InferenceResponse]]
    ) -> Callable[[InferenceRequest], Awaitable[InferenceResponse]]:
        @functools.wraps(predict)
        async def checked(payload: InferenceRequest) -> InferenceResponse:
            self._check(payload)
            return await predict(payload)

        return checked

    def _check(self, payload: InferenceRequest) -> None:
        """InferenceError (400 / INVALID_ARGUMENT), counted as a refusal, unless the request has exactly one
        input tensor that follows the V2 rules (v2_problem): this model takes one tensor of images."""
        problems = [f"the model takes one input tensor; the request has {len(payload.inputs)}"]
        if len(payload.inputs) == 1:
            problems = [problem for problem in map(v2_problem, payload.inputs) if problem]
        if problems:
            self.refused.inc()
            raise InferenceError(problems[0])

    @property
    def extra(self) -> dict[str, object]:
        return (self.settings.parameters.extra if self.settings.parameters else None) or {}

    @property
    def signature(self) -> str:
        return str(self._signature.inputs) if self._signature is not None else "(none)"

    @property
    def registry_version(self) -> str | None:
        version = self.extra.get("registry_version")
        return str(version) if version is not None else None

    async def load(self) -> bool:
        loaded = await super().load()
        if self.extra.get("direct_path", True):
            self.direct = DirectTorchModel.of(self._model, Path(await get_model_uri(self._settings)))
        else:
            self.direct = None
        self.gathered = Gathered(self, self.settings.max_batch_size)
        # The counter's child for this model version, looked up once rather than per request.
        version = self.registry_version or ""
        self.served = SERVED_REQUESTS.labels(self.name, version)
        self.refused = FAILED_REQUESTS.labels(self.name, version, "client")
        self.failed = FAILED_REQUESTS.labels(self.name, version, "server")
        if gc.get_freeze_count() == 0:
            self._refreeze()  # the server's first load: collect what start-up left behind, then freeze
        elif self.extra.get("gc_freeze", True):
            gc.freeze()  # a reload: the new copy joins the frozen heap; unload collects the old one
        return loaded

    async def unload(self) -> bool:
        unloaded = await super().unload()
        # A reload in place unloads this copy once the new one serves; requests gathered for this copy before
        # the switch are answered by it first (a pass that ran after would find no module: a 400).
        if (gathered := getattr(self, "gathered", None)) is not None:  # None: unloaded before its load finished
            gathered.flush()
        self.direct = None
        self._refreeze()
        return unloaded

    def _refreeze(self) -> None:
        if self.extra.get("gc_freeze", True):
            gc.unfreeze()
            gc.collect()
            gc.freeze()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """MLflowRuntime.predict, with the direct path, and with bad input answered as 400 / INVALID_ARGUMENT
        and a readable reason (MLflow's schema errors would otherwise be a bare 500). Every request is
        counted by this version: answered, refused (bad input) or failed; the digits of a request that carries
        its labels (LABELS_HEADER) are counted right or wrong. Once requests stop, the C heap is trimmed
        (services/serving/heap.py), so an idle server does not keep what they used."""
        self._check(payload)
        try:
            answer = self._answer(payload)
        except InferenceError:
            self.refused.inc()
            raise
        except Exception:
            self.failed.inc()
            raise
        response = self.encode_response(answer, default_codec=TensorDictCodec)
        response.model_version = self.registry_version
        self._count_answer(answer, lambda images: labels_of(payload, images))
        return response

    def raw_images(self, name: str, datatype: str, shape: Sequence[int], raw: bytes) -> np.ndarray:
        """Input tensor `name`, sent as raw little-endian bytes (gRPC's `raw_input_contents`), as a writable array
        of `datatype` and `shape` for the direct path (`predict_arrays`).

        Raises InferenceError (INVALID_ARGUMENT), counted as a refusal, when `raw` does not hold prod(shape)
        values of `datatype` or a dimension is negative.
        """
        try:
            # A copy (microseconds): torch refuses to promise anything for a read-only buffer, and warns.
            return from_bytes(name, datatype, shape, raw).reshape(shape).copy()
        except TensorBytesError as err:
            self.refused.inc()
            raise InferenceError(str(err)) from err

    def predict_arrays(self, batches: Sequence[np.ndarray], labels: Sequence[str | None]) -> list[np.ndarray]:
        """The direct path's answer to each request of `batches` in one forward pass, each counted as `predict`
        counts its answers. A request's images are an array of the dtype and shape the direct path takes
        (`self.direct.takes`: float32 (N, 1, 28, 28) for the sandbox's model), and its answer the module's
        rows for them (float32 (N, 10) probabilities); `labels` holds each request's LABELS_HEADER value, or
        None.

        Raises InferenceError (400 / INVALID_ARGUMENT) when this version has no direct path; whatever the module
        raises, counted as a failure of each request.
        """
        direct = self.direct
        if direct is None:
            raise InferenceError(f"model {self.name!r} has no direct path")
        try:
            answer = direct.predict(batches[0] if len(batches) == 1 else np.concatenate(batches))
        except Exception:
            self.failed.inc(len(batches))
            raise
        answers = (
            np.split(answer, np.cumsum([len(images) for images in batches[:-1]])) if len(batches) > 1 else [answer]
        )
        for rows, text in zip(answers, labels, strict=True):
            self._count_answer(rows, functools.partial(labels_in, text))
        return answers

    def _count_answer(self, answer: object, labels: Callable[[int], np.ndarray | None]) -> None:
        """Count an answer as served, and its digits right or wrong against `labels(number of images)`; arm the
        heap trimmer."""
        self.served.inc()
        HEAP_TRIMMER.after_request()
        if isinstance(answer, np.ndarray) and answer.ndim == 2 and answer.shape[1] > 1:
            self._count_labelled(answer.argmax(axis=1), labels(len(answer)))

    def _count_labelled(self, digits: np.ndarray, labels: np.ndarray | None) -> None:
        if labels is None:
            return
        for digit, label in zip(digits.tolist(), labels.tolist(), strict=True):
            correct = "true" if digit == label else "false"
            LABELLED_PREDICTIONS.labels(self.name, self.registry_version or "", str(digit), correct).inc()

    def _answer(self, payload: InferenceRequest) -> object:
        direct = self.direct if self.direct is not None and self.direct.accepts(payload) else None
        try:
            decoded = NumpyCodec.decode_input(payload.inputs[0]) if direct else self.decode_request(payload)
        except (ValueError, TypeError, OverflowError) as err:  # e.g. values that are not numbers of its datatype
            raise InferenceError(f"cannot decode the request's inputs: {err}") from err
        if direct is not None:
            return direct.predict(decoded)
        try:
            return self._model.predict(decoded, params=model_params(payload.parameters) or None)
        except MlflowException as err:
            if err.error_code != "INVALID_PARAMETER_VALUE":
                raise
            # MLflow's message embeds the whole input; the reason is the exception it wraps.
            reason = err.__context__ or err.message
            raise InferenceError(
                f"the request does not match the model's signature {self.signature}: {reason}"
            ) from err

"""A small client for the V2 (Open Inference) protocol over REST, as MLServer speaks it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import requests


class InferenceError(RuntimeError):
    """The server refused or failed a request; the message carries its answer."""


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray
    model_name: str
    model_version: str | None

    @property
    def digits(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


def infer_payload(images: np.ndarray) -> dict:
    """A V2 inference request for float32 images of shape (N, 1, 28, 28)."""
    batch = np.ascontiguousarray(images, dtype=np.float32)
    return {
        "inputs": [{"name": "input-0", "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}]
    }


class V2Client:
    def __init__(self, base_url: str, model: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.session = requests.Session()

    @property
    def infer_url(self) -> str:
        return f"{self.base_url}/v2/models/{self.model}/infer"

    @property
    def ready_url(self) -> str:
        return f"{self.base_url}/v2/models/{self.model}/ready"

    def infer(self, images: np.ndarray) -> Prediction:
        response = self.session.post(self.infer_url, json=infer_payload(images), timeout=self.timeout)
        if response.status_code != 200:
            raise InferenceError(f"POST {self.infer_url} answered {response.status_code}: {response.text[:500]}")
        body = response.json()
        output = body["outputs"][0]
        probabilities = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
        return Prediction(probabilities, body.get("model_name", self.model), body.get("model_version"))

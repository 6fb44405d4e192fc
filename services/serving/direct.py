"""A direct path from a V2 request to a logged PyTorch module, for requests that already match its signature.

MLflow's pyfunc wrapper checks every request against the model signature, converts it and traces the
call before the module runs. For a request whose one input already has the signature's dtype and shape,
none of that can change the answer, and for one image it cost more than the forward pass itself (profile
in docs/performance.md). This path runs the module as mlflow.pytorch's own wrapper does (eval mode, no
autograd, on the module's device, answer as a CPU numpy array), so the answer is the same to the bit.

Every other request (another dtype or rank, several inputs, inference parameters, a pandas content type)
takes MLflow's path unchanged, with MLflow's checks and error messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from mlflow.pyfunc import PyFuncModel
from mlflow.types.schema import TensorSpec
from mlserver.codecs import NumpyCodec
from mlserver.codecs.numpy import to_dtype
from mlserver.types import InferenceRequest

NUMPY_CONTENT_TYPES = (None, NumpyCodec.ContentType)


@dataclass(frozen=True)
class DirectTorchModel:
    """A logged PyTorch module run directly, with the dtype and shape its signature accepts."""

    module: torch.nn.Module
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    """The signature's shape; -1 matches any size."""
    device: torch.device

    @classmethod
    def of(cls, model: PyFuncModel) -> DirectTorchModel | None:
        """The direct path for `model`, or None when it is not a plain PyTorch module with one tensor input."""
        if model.metadata.flavors.get("python_function", {}).get("loader_module") != "mlflow.pytorch":
            return None
        schema = model.metadata.get_input_schema()
        if schema is None or not schema.is_tensor_spec() or len(schema.inputs) != 1:
            return None
        spec = schema.inputs[0]
        module = model.get_raw_model()
        if not isinstance(spec, TensorSpec) or not isinstance(module, torch.nn.Module) or module.training:
            return None
        parameter = next(module.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        return cls(module, spec.type, tuple(spec.shape), device)

    def accepts(self, request: InferenceRequest) -> bool:
        """Whether MLflow's own checks would pass `request` through unchanged."""
        if len(request.inputs) != 1:
            return False
        if request.parameters is not None and (
            request.parameters.content_type not in NUMPY_CONTENT_TYPES or request.parameters.model_extra
        ):
            return False
        tensor = request.inputs[0]
        if tensor.parameters is not None and tensor.parameters.content_type not in NUMPY_CONTENT_TYPES:
            return False
        if len(tensor.shape) != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, tensor.shape, strict=True)
        ):
            return False
        return to_dtype(tensor) == self.dtype

    def predict(self, array: np.ndarray) -> np.ndarray:
        """The module's answer for `array` (the signature's dtype and shape), as a CPU numpy array."""
        with torch.inference_mode():
            answer = self.module(torch.from_numpy(array).to(self.device))
        return answer.cpu().numpy()

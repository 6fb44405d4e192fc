"""A direct path from a V2 request to a logged PyTorch module, for requests that already match its signature.

MLflow's pyfunc wrapper checks every request against the model signature, converts it and traces the
call before the module runs. For a request whose one input already has the signature's dtype and shape,
none of that can change the answer, and for one image it cost more than the forward pass itself (profile
in docs/performance.md). This path runs the module as mlflow.pytorch's own wrapper does (eval mode, no
autograd, on the module's device, answer as a CPU numpy array), so the answer is the same to the bit.

Every other request (another dtype or rank, several inputs, inference parameters other than the binary tensor
extension's `binary_data_output`, a pandas content type) takes MLflow's path unchanged, with MLflow's checks
and error messages.

A model logged as a torch.export program (MLflow's `serialization_format="pt2"`, data/model.pt2) loads as a
graph module that checks every call's inputs against the program's guards and input constraints, in Python:
about 100 us per call, more than the forward pass of one image (docs/performance.md). The direct path loads
the same program once more without those checks (`ExportedProgram.module(check_guards=False)` and its
`validate_inputs` switch, which torch's own module swapping turns off too). It takes only requests that
match the signature, and MLflow exported the program from that signature (each -1 a `torch.export.Dim`
with no bounds), so the checks left out could refuse nothing it takes. MLflow's path keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.pyfunc import PyFuncModel
from mlflow.types.schema import TensorSpec
from mlserver.codecs import NumpyCodec
from mlserver.codecs.numpy import to_dtype
from mlserver.types import InferenceRequest

from services.serving.tensors import model_params

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
    def of(cls, model: PyFuncModel, path: Path | None = None) -> DirectTorchModel | None:
        """The direct path for `model`, or None when it is not a plain PyTorch module with one tensor input.

        `path` is the local folder `model` was loaded from; a torch.export program (data/model.pt2) found there
        is loaded again from it without its per-call input checks (see the module docstring). Without it, the
        program runs as MLflow loaded it.
        """
        if model.metadata.flavors.get("python_function", {}).get("loader_module") != "mlflow.pytorch":
            return None
        schema = model.metadata.get_input_schema()
        if schema is None or not schema.is_tensor_spec() or len(schema.inputs) != 1:
            return None
        spec = schema.inputs[0]
        module = model.get_raw_model()
        if not isinstance(spec, TensorSpec) or not isinstance(module, torch.nn.Module):
            return None
        if isinstance(module, torch.fx.GraphModule) and hasattr(module, "validate_inputs"):
            # A torch.export program: traced as logged (eval mode), its `training` flag means nothing.
            program = exported_program_file(model, path)
            if program is not None:
                unchecked = torch.export.load(program).module(check_guards=False)
                unchecked.validate_inputs = False  # type: ignore[assignment]  # a flag, not a submodule
                # The same tensors as MLflow's copy, not a second set of weights.
                unchecked.load_state_dict(module.state_dict(), assign=True)
                module = unchecked
        elif module.training:
            return None
        parameter = next(module.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        return cls(module, spec.type, tuple(spec.shape), device)

    def accepts(self, request: InferenceRequest) -> bool:
        """Whether MLflow's own checks would pass `request` through unchanged."""
        if len(request.inputs) != 1:
            return False
        if request.parameters is not None and (
            request.parameters.content_type not in NUMPY_CONTENT_TYPES or model_params(request.parameters)
        ):
            return False
        tensor = request.inputs[0]
        if tensor.parameters is not None and tensor.parameters.content_type not in NUMPY_CONTENT_TYPES:
            return False
        return self.takes(to_dtype(tensor), tensor.shape)

    def takes(self, dtype: np.dtype[Any], shape: Sequence[int]) -> bool:
        """Whether a tensor of `dtype` and `shape` is what the signature accepts (each -1 matching any size)."""
        if len(shape) != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        ):
            return False
        return dtype == self.dtype

    def predict(self, array: np.ndarray) -> np.ndarray:
        """The module's answer for `array` (the signature's dtype and shape), as a CPU numpy array."""
        with torch.inference_mode():
            answer = self.module(torch.from_numpy(array).to(self.device))
        return answer.cpu().numpy()


def exported_program_file(model: PyFuncModel, path: Path | None) -> Path | None:
    """The torch.export program (data/model.pt2, as mlflow.pytorch names it) of the MLflow model folder `path`
    that `model` was loaded from, or None."""
    if path is None:
        return None
    data = model.metadata.flavors.get("pytorch", {}).get("model_data", "data")
    program = path / data / "model.pt2"
    return program if program.is_file() else None

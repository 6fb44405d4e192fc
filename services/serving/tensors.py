"""V2 tensors as raw little-endian bytes, read as numpy views: gRPC's `raw_input_contents` and the binary
tensor data extension of V2 REST.

Both carry a numeric tensor as its values' bytes, in row-major order and little-endian, with no framing
(the Open Inference Protocol, "Raw Tensor Data" and kserve's "Binary Tensor Data Extension"; Triton's
`binary_tensor_data` extension is the same). `np.frombuffer` reads them in place, in microseconds;
MLServer 1.7.1 unpacks them into a Python list of floats first (`mlserver.raw.unpack`), about 0.6 ms for a
batch of 32 MNIST images (docs/performance.md). BYTES tensors (length-prefixed strings) are not numeric and
stay with MLServer's own unpacking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

TRANSPORT_PARAMETERS = frozenset({"binary_data_output"})
"""Request parameters of the binary tensor data extension that say how answers travel, not what the model
computes. tritonclient.http adds `"binary_data_output": true` to every JSON request that names no output; they
are never the model's `params` (MLflow warned "Ignoring provided params" once per such request), and they do
not keep a request off the direct path."""

DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?",
        "UINT8": "u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}
"""The numpy dtype of each numeric V2 datatype, as its raw bytes are laid out (little-endian)."""


class TensorBytesError(ValueError):
    """Raw tensor bytes that do not match the tensor they are sent for: a client error (400)."""


def from_bytes(name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview) -> np.ndarray:
    """The values of V2 tensor `name` read from `raw`, a read-only 1-D numpy view (no copy) of dtype
    DTYPES[datatype] and prod(shape) elements.

    Raises TensorBytesError when `datatype` is not numeric (BYTES, or unknown), a dimension is negative, or
    `raw` does not hold exactly prod(shape) values (bytes = values x itemsize).
    """
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise TensorBytesError(f"input {name!r}: datatype {datatype!r} cannot be read from raw bytes here")
    if any(dimension < 0 for dimension in shape):
        raise TensorBytesError(f"input {name!r} declares shape {list(shape)}: no negative dimension")
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise TensorBytesError(
            f"input {name!r}: shape {list(shape)} of {datatype} needs {expected} bytes, the request carries {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype)


def to_bytes(datatype: str, data: Any) -> bytes:
    """`data` (a numpy array, or the nested list MLServer's codecs encode outputs as) as raw little-endian
    bytes of V2 `datatype`. Raises TensorBytesError for a datatype that is not numeric."""
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise TensorBytesError(f"datatype {datatype!r} cannot be sent as raw bytes here")
    return np.ascontiguousarray(data, dtype=dtype).tobytes()


def model_params(parameters: Any) -> dict[str, Any]:
    """The extra request parameters of a V2 request (`parameters.model_extra`, for pydantic's Parameters or
    None) that are the model's: all but TRANSPORT_PARAMETERS; empty when there are none."""
    extra = (parameters.model_extra if parameters is not None else None) or {}
    return {key: value for key, value in extra.items() if key not in TRANSPORT_PARAMETERS}

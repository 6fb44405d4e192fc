"""What the two shortcuts past MLServer's request path share: gRPC's (services/serving/grpc_direct.py) and REST
JSON's (services/serving/rest_direct.py).

Each answers a request the direct path takes (services/serving/direct.py) without MLServer's pydantic types,
codecs and adaptive batching, inside MLServer's data plane's `_infer_contextmanager` (its model metrics and
model context), and must give the answer MLServer's path gives, field for field: the names, content types and
CloudEvents headers below are MLServer 1.7.1's, and the tests of both compare the two paths' answers.

This module imports neither torch nor MLflow: MLServer imports it with the patches, before it loads a model.
"""

from __future__ import annotations

from typing import Any

from mlserver.handlers import DataPlane
from mlserver.types import InferenceResponse
from mlserver.utils import extract_headers

from services.serving.tensors import DTYPES

OUTPUT_NAME = "output-1"
"""The name MLServer's NumpyRequestCodec gives a model's one output (it counts from 1), as MLServer's path answers."""
CONTENT_TYPE = "np"
"""The content type MLServer's path puts on the answer and its output: its NumpyCodec's."""
DATATYPES = {dtype: name for name, dtype in DTYPES.items()}
"""The V2 datatype of each numpy dtype a direct answer can have."""


def direct_model(data_plane: DataPlane, model: Any) -> Any:
    """The direct path (a DirectTorchModel) of `model`, MLServer's loaded model for a request, when a shortcut
    may answer for it: the model is ready, is the sandbox's runtime with a direct path, and MLServer's response
    cache is off (a shortcut does not consult it). Otherwise None."""
    if data_plane._response_cache is not None or not getattr(model, "ready", False):
        return None
    if not hasattr(model, "predict_array"):
        return None  # not the sandbox's runtime
    return getattr(model, "direct", None)


def cloudevents_headers(data_plane: DataPlane, model: Any, response_id: str) -> dict[str, str]:
    """The headers MLServer's data plane puts on the answer with id `response_id` (its CloudEvents middleware's
    `ce-*`): HTTP headers over REST, trailing metadata over gRPC."""
    headers = InferenceResponse.model_construct(id=response_id, parameters=None)
    data_plane._inference_middleware.response_middleware(headers, model.settings)
    return extract_headers(headers) or {}

"""Prometheus metrics of the serving runtime.

Kept apart from the runtime module because MLServer re-imports (importlib.reload) a model's
implementation module on every load, and a metric registered twice is an error.
"""

from __future__ import annotations

from prometheus_client import Counter

SERVED_REQUESTS = Counter(
    "served_model_requests",
    "Inference requests answered, by registered model name and version",
    ["model_name", "model_version"],
)
LABELLED_PREDICTIONS = Counter(
    "served_model_labelled_predictions",
    "Predicted images whose true digit the request carried (x-sandbox-labels), by version, predicted digit and "
    "whether it was right",
    ["model_name", "model_version", "digit", "correct"],
)
FAILED_REQUESTS = Counter(
    "served_model_failed_requests",
    "Inference requests the runtime refused (kind=client: bad input, answered 4xx / INVALID_ARGUMENT) or failed "
    "(kind=server), by registered model name and version",
    ["model_name", "model_version", "kind"],
)

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

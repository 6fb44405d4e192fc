"""References to registered model versions, and the `models:/` URIs MLflow loads them by; no MLflow import.

A reference is a version number ("3"), an alias ("@production") or a stage ("Production"): the three forms
MLflow's `models:/` URIs take (https://mlflow.org/docs/latest/ml/model-registry/).
"""

from __future__ import annotations

import re

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
LIFECYCLE_ALIASES = {"staging": "Staging", "production": "Production"}
STAGES = ("None", "Staging", "Production", "Archived")


def model_uri(name: str, ref: str) -> str:
    """The `models:/` URI for a version ("3"), an alias ("@production") or a stage ("Production")."""
    ref = ref.strip()
    if ref.startswith("@"):
        if not re.fullmatch(r"@[A-Za-z0-9_\-]+", ref):
            raise ValueError(f"invalid alias reference {ref!r}")
        return f"models:/{name}{ref}"
    if ref.isdigit() and int(ref) > 0:
        return f"models:/{name}/{int(ref)}"
    stage = ref.capitalize()
    if stage in STAGES[1:] or ref == "latest":
        return f"models:/{name}/{ref if ref == 'latest' else stage}"
    raise ValueError(
        f"invalid model reference {ref!r}: use a version number (3), an alias (@production) "
        "or a stage (Staging, Production, Archived)"
    )

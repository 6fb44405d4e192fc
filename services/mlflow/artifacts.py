"""The tracking server's S3 artifact store, answering a missing object with 404 instead of 500.

MLflow's `S3ArtifactRepository._download_file` (3.12, and unchanged in the server's 3.17.2) lets botocore's
"404" escape unmapped, so the artifact proxy (`GET /api/2.0/mlflow-artifacts/artifacts/...`) answers a missing
key with 500 INTERNAL_ERROR. Clients retry a 500 (7 times, with exponential backoff), and MLflow's own
`runs:/<run_id>/model` loader asks for the run-level `model` object before it falls back to the logged model
under `models/m-<id>/`. Measured: 246 s for one `mlflow.pytorch.load_model("runs:/...")`, against 0.2 s for the
`models:/` forms. Upstream: mlflow/mlflow#24535 (open); the fix proposed there maps the same error codes.

Registered for the `s3` scheme through MLflow's `mlflow.artifact_repository` entry point (pyproject.toml),
which MLflow reads after its built-in schemes, so every process of an environment the project is installed in
uses it: the tracking server's (.venv-tracking, the mlflow image) as well as .venv. Everything but the
missing-object error is MLflow's own code.
"""

from __future__ import annotations

from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository as MlflowS3ArtifactRepository

# HeadObject, which boto3's managed download calls first, has no body: a missing key comes back as code "404".
MISSING_OBJECT_CODES = frozenset({"404", "NoSuchKey"})


class S3ArtifactRepository(MlflowS3ArtifactRepository):  # type: ignore[misc]
    """MLflow's S3 artifact repository, except that a missing object raises RESOURCE_DOES_NOT_EXIST.

    Raises:
        MlflowException: RESOURCE_DOES_NOT_EXIST (HTTP 404 from the proxy) when the object does not exist;
            every other S3 error as MLflow raises it.
    """

    def _download_file(self, remote_file_path: str, local_path: str) -> Any:
        from botocore.exceptions import ClientError

        try:
            return super()._download_file(remote_file_path, local_path)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in MISSING_OBJECT_CODES:
                raise
            raise MlflowException(
                f"No artifact at {self.artifact_uri.rstrip('/')}/{remote_file_path}",
                error_code=RESOURCE_DOES_NOT_EXIST,
            ) from error

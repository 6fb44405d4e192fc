"""Create the artifact bucket named by MLFLOW_ARTIFACTS_DESTINATION; idempotent.

python -m infra.ops.create_bucket
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from mlops_sandbox.s3 import ensure_bucket, s3_client, wait_for_s3
from mlops_sandbox.settings import ArtifactStoreSettings
from mlops_sandbox.waiting import DependencyUnavailable


def main() -> int:
    try:
        settings = ArtifactStoreSettings()
    except ValidationError as err:
        print(f"invalid settings:\n{err}", file=sys.stderr)
        return 2
    bucket = settings.s3_bucket
    if bucket is None:
        print(f"artifacts go to {settings.artifacts_destination}, not S3: no bucket to create")
        return 0
    endpoint = settings.s3_endpoint_url or "AWS S3"
    client = s3_client(settings.s3_endpoint_url, settings.aws_access_key_id, settings.aws_secret_access_key)
    try:
        wait_for_s3(client, endpoint=endpoint, timeout=settings.dependency_wait_seconds)
        created = ensure_bucket(client, bucket)
    except DependencyUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"bucket {bucket!r} {'created' if created else 'already exists'} at {endpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

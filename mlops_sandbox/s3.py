"""The S3 object store as the stack sees it: a client, a bounded wait, and the bucket."""

from __future__ import annotations

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from pydantic import SecretStr

from mlops_sandbox.waiting import DependencyUnavailable, NotReadyYet, wait_for


def s3_client(endpoint_url: str | None, access_key: SecretStr | None, secret_key: SecretStr | None) -> BaseClient:
    """A boto3 S3 client that fails fast (3 s to connect, 10 s to read, one attempt): waits are wait_for's job."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key.get_secret_value() if access_key else None,
        aws_secret_access_key=secret_key.get_secret_value() if secret_key else None,
        region_name="us-east-1",
        config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 1}),
    )


def wait_for_s3(client: BaseClient, *, endpoint: str, timeout: float) -> None:
    """Wait until the object store answers an authenticated request."""

    def probe() -> None:
        try:
            client.list_buckets()
        except EndpointConnectionError as err:
            raise NotReadyYet(str(err)) from err
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                raise DependencyUnavailable(
                    f"the object store at {endpoint} refused the credentials ({code}): check "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                ) from err
            raise NotReadyYet(str(err)) from err
        except BotoCoreError as err:
            raise NotReadyYet(str(err)) from err

    wait_for(
        probe,
        service="object store (S3)",
        address=endpoint,
        timeout=timeout,
        hint="Check that it is running and that MLFLOW_S3_ENDPOINT_URL points at it.",
    )


def bucket_exists(client: BaseClient, bucket: str) -> bool:
    """Whether `bucket` exists; botocore's ClientError for anything but "not found" (refused credentials...)."""
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise
    return True


def ensure_bucket(client: BaseClient, bucket: str) -> bool:
    """Create `bucket` unless it exists; True when it was created. Running it twice is a no-op."""
    if bucket_exists(client, bucket):
        return False
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False
        raise
    return True

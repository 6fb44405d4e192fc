"""Connecting to MLflow: a tracking server (waited for, boundedly) or a `sqlite:///` store."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import mlflow
import requests
from mlflow.tracking import MlflowClient

from mlops_sandbox.settings import AUTH_DOCS, TrackingClientSettings
from mlops_sandbox.waiting import DependencyUnavailable, wait_for_http

# An endpoint that every signed-in user may read (MLflow's default_permission READ), and that needs one.
SIGNED_IN_PROBE = "/api/2.0/mlflow/registered-models/search?max_results=1"


def is_server(tracking_uri: str) -> bool:
    """Whether `tracking_uri` names a tracking server (http or https) rather than a store."""
    return tracking_uri.startswith(("http://", "https://"))


def connect(
    settings: TrackingClientSettings,
    *,
    request_retry_seconds: float | None = None,
    notice: Callable[[str], object] | None = None,
) -> MlflowClient:
    """Point MLflow at the tracking URI and return a client of it.

    A tracking server is first waited for: /health must answer 200 within `settings.wait_seconds`, or
    DependencyUnavailable names the address it could not reach; `notice` is told once when it does not answer
    at first (wait_for). Then its answer to this client's credentials is checked (`check_credentials`). Every
    later request of this process retries for about as long, or `request_retry_seconds` (`bound_request_retries`).
    """
    uri = settings.tracking_uri
    if is_server(uri):
        bound_request_retries(settings.wait_seconds if request_retry_seconds is None else request_retry_seconds)
        wait_for_http(
            f"{uri.rstrip('/')}/health",
            service="MLflow tracking server",
            timeout=settings.wait_seconds,
            hint=(
                "Check that it is running (the sandbox's: bash infra/sandbox.sh up, or docker compose up) and that "
                "MLFLOW_TRACKING_URI points at it."
            ),
            notice=notice,
        )
        check_credentials(settings)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def check_credentials(settings: TrackingClientSettings) -> None:
    """One signed-in request, as MLflow's client would send it (MLFLOW_TRACKING_USERNAME and _PASSWORD as HTTP
    basic auth): DependencyUnavailable naming the server and the variables when it answers 401, so that a
    missing or wrong password stops a client at its start with one line instead of a traceback from its
    first call. A server without the auth app answers 200 whatever is sent.
    """
    uri = settings.tracking_uri.rstrip("/")
    password = settings.password.get_secret_value() if settings.password else None
    credentials = (settings.username, password) if settings.username and password else None
    response = requests.get(f"{uri}{SIGNED_IN_PROBE}", auth=credentials, timeout=30)
    if response.status_code != 401:
        return
    who = f"refused user {settings.username!r}" if credentials else "needs a user and password, and none was given"
    raise DependencyUnavailable(
        f"MLflow tracking server at {uri} {who} (401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
        f"(its basic-auth app is on; see {AUTH_DOCS})"
    )


MAX_RETRIES_LIMIT = 10
"""MLflow refuses more retries than this (_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT, mlflow/environment_variables.py)."""


def bound_request_retries(seconds: float) -> int:
    """Make each request of MLflow's client in this process give up after retrying about `seconds` (s).

    MLflow retries a request that cannot connect, or is answered 408, 429 or 5xx, with urllib3's backoff:
    MLFLOW_HTTP_REQUEST_MAX_RETRIES (7) tries, sleeping 0 s and then BACKOFF_FACTOR (2) x 2^(n-1) s, capped at
    120 s; about 4 minutes per request. A job whose tracking server dies makes several more requests
    before it can stop (ending the run is one), so it would hang for many minutes before it says why.

    With a backoff factor of 1, n retries sleep 2^n - 2 s in all (plus MLflow's jitter of up to 1 s each):
    this sets the fewest retries that cover `seconds`, at most 10 (MLflow's limit: 1,022 s). MLflow's own
    variables win when a user set them; values that an earlier call set (in this process, or in the parent
    that passed its environment on, marked by RETRY_BOUND_MARK) are recomputed, so that a child with a shorter
    wait does not inherit a longer one. Returns the number of retries in force.
    """
    current = (os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"), os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"))
    ours = os.environ.get(RETRY_BOUND_MARK) == ":".join(map(str, current))
    if current != (None, None) and not ours:
        return int(current[0] or "7")
    retries = 1
    while 2**retries - 2 < seconds and retries < MAX_RETRIES_LIMIT:
        retries += 1
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ[RETRY_BOUND_MARK] = f"{retries}:1"
    return retries


RETRY_BOUND_MARK = "SANDBOX_TRACKING_RETRY_BOUND"
"""Set beside MLflow's two variables by `bound_request_retries`, to their values: they are this project's, not
a user's, and a later call may change them."""


class TrackingServerFailed(DependencyUnavailable):
    """The tracking server, or a store behind it, failed a request after MLflow's retries; the message names
    what could not be reached and what the client was doing."""


def first_line(text: object, limit: int = 300) -> str:
    """The first non-empty line of `text`, cut to `limit` characters: one line for a person, not a traceback."""
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _error_message(response: requests.Response) -> str:
    """The error of an answer: MLflow's JSON `message`, or the title of the HTML page that Flask answers an
    unhandled exception with (whose cause is then only in the server's log)."""
    try:
        return first_line(response.json().get("message", response.text))
    except ValueError:
        title = re.search(r"<title>(.*?)</title>", response.text, re.IGNORECASE | re.DOTALL)
        if title:
            return f"{first_line(title.group(1))}; the server's log says why"
        return first_line(response.text)


def diagnose(tracking_uri: str, doing: str, err: Exception) -> TrackingServerFailed:
    """Why a request to the tracking server at `tracking_uri` failed, asked of the server itself, as one line.

    MLflow's client reports a request that exhausted its retries without the server's answer ("too many 500
    error responses"), so the server is asked again, once each, with short timeouts: whether it answers at all
    (/health), whether it reaches its artifact store (listing the artifact root through its proxy) and its
    backend store (searching experiments). Its own error message names the store's address (for example
    "Could not connect to the endpoint URL: http://s3:9000/..." or PostgreSQL's "connection to server at ...
    failed"). `doing` says what the client was doing ("logging the run"); `err` is the original failure.
    """
    uri = tracking_uri.rstrip("/")
    try:
        requests.get(f"{uri}/health", timeout=5).raise_for_status()
    except requests.RequestException as probe_err:
        reason = "connection refused" if isinstance(probe_err, requests.ConnectionError) else first_line(probe_err)
        return TrackingServerFailed(
            f"lost the MLflow tracking server at {uri} while {doing} ({reason}); "
            "start it again and rerun (SANDBOX_TRACKING_WAIT_SECONDS sets how long each request retries)"
        )
    for store, path in (
        ("artifact store", "/api/2.0/mlflow-artifacts/artifacts"),
        ("backend store", "/api/2.0/mlflow/experiments/search?max_results=1"),
    ):
        try:
            answer = requests.get(f"{uri}{path}", timeout=30)
        except requests.RequestException:
            continue
        if answer.status_code >= 500:
            return TrackingServerFailed(
                f"the MLflow tracking server at {uri} cannot reach its {store} while {doing} "
                f"({_error_message(answer)}); start it again and rerun"
            )
    return TrackingServerFailed(f"the MLflow tracking server at {uri} failed while {doing}: {first_line(err)}")

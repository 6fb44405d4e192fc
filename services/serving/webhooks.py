"""MLflow's model-registry webhooks into the follower: a receiver that checks each delivery and wakes the
poll loop, and the registration of that receiver in MLflow, one webhook per endpoint URL.

MLflow 3.12 (mlflow/webhooks/delivery.py) POSTs a JSON body `{"entity", "action", "timestamp", "data"}` with
three headers: X-MLflow-Delivery-Id (a UUID), X-MLflow-Timestamp (Unix seconds) and X-MLflow-Signature,
`v1,` + base64(HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{body}")), as Standard Webhooks
(standardwebhooks.com) signs. A delivery only wakes the follower, which then asks the registry itself:
the payload is never trusted for what to serve, and polling stays as the fallback for missed deliveries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from mlflow.entities.webhook import WebhookStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from requests import RequestException

from mlops_sandbox.settings import ModelReference

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
# The two events MLflow 3.12 emits when an alias moves (set_registered_model_alias) or is removed. It emits
# none for stage transitions, so an endpoint that follows a stage polls only.
EVENTS = ("model_version_alias.created", "model_version_alias.deleted")
TOLERANCE_SECONDS = 300.0
"""How old (or how far ahead) a delivery's timestamp may be: Standard Webhooks' default of 5 minutes."""
MAX_BODY_BYTES = 64 * 1024
"""An alias event is about 200 bytes; anything far larger is not MLflow's."""
WEBHOOK_NAME_PREFIX = "sandbox-serving"


class Headers(Protocol):
    """A delivery's headers: a dict in tests, http.server's case-insensitive message in the receiver."""

    def get(self, name: str, /) -> str | None: ...


class DeliveryRejected(Exception):
    """A delivery that is not MLflow's, or not fresh: `status` is the HTTP status to answer (4xx)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The X-MLflow-Signature of a delivery: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`, as MLflow
    3.12's `_generate_hmac_signature` computes it (the secret as UTF-8 bytes)."""
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Verifier:
    """Checks deliveries: signature, timestamp within TOLERANCE_SECONDS, delivery id not seen before.

    `clock` returns Unix seconds (injected for tests). Ids are remembered for as long as their timestamp is
    acceptable, so a replay inside the window is caught by its id and one outside it by its age.
    """

    def __init__(self, secret: str, *, clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("a webhook secret is required")
        self.secret = secret
        self.clock = clock
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()

    def verify(self, headers: Headers, body: bytes) -> dict[str, Any]:
        """The delivery's JSON body as a dict; DeliveryRejected (401 unsigned or badly signed, 400 stale or
        malformed, 409 replayed) otherwise."""
        delivery_id, timestamp = headers.get(DELIVERY_ID_HEADER), headers.get(TIMESTAMP_HEADER)
        signature = headers.get(SIGNATURE_HEADER)
        if not (delivery_id and timestamp and signature):
            needed = f"{SIGNATURE_HEADER}, {TIMESTAMP_HEADER} and {DELIVERY_ID_HEADER}"
            raise DeliveryRejected(401, f"unsigned: {needed} are required")
        expected = sign(self.secret, delivery_id, timestamp, body)
        # MLflow sends one signature; Standard Webhooks allows several, space-separated.
        if not any(hmac.compare_digest(expected, given) for given in signature.split()):
            raise DeliveryRejected(401, "bad signature")
        try:
            sent = float(timestamp)
        except ValueError:
            raise DeliveryRejected(400, f"bad {TIMESTAMP_HEADER}: {timestamp!r}") from None
        now = self.clock()
        if abs(now - sent) > TOLERANCE_SECONDS:
            raise DeliveryRejected(400, f"stale: sent {now - sent:.0f} s ago (tolerance {TOLERANCE_SECONDS:g} s)")
        with self.lock:
            self.seen = {known: at for known, at in self.seen.items() if now - at <= TOLERANCE_SECONDS}
            if delivery_id in self.seen:
                raise DeliveryRejected(409, f"delivery {delivery_id} was already received")
            self.seen[delivery_id] = sent
        try:
            payload = json.loads(body)
        except ValueError:
            raise DeliveryRejected(400, "the body is not JSON") from None
        if not isinstance(payload, dict):
            raise DeliveryRejected(400, "the body is not a JSON object")
        return payload


def concerns(payload: Mapping[str, Any], model: ModelReference) -> bool:
    """Whether a verified delivery is an alias event of the model and alias that `model` follows."""
    data = payload.get("data")
    return (
        f"{payload.get('entity')}.{payload.get('action')}" in EVENTS
        and isinstance(data, dict)
        and data.get("name") == model.name
        and f"@{data.get('alias')}" == model.ref
    )


class WebhookReceiver:
    """An HTTP server on (host, port) that takes MLflow's deliveries on any path, in its own thread.

    A verified delivery for `model` calls `on_event()` and is answered 200 `{"status": "accepted"}`; a
    verified one about anything else 200 `{"status": "ignored"}` (a 4xx would only make MLflow log an error);
    a rejected one its 4xx with the reason, and nothing changes. Only POST is served (405 otherwise).
    """

    def __init__(
        self,
        address: tuple[str, int],
        verifier: Verifier,
        model: ModelReference,
        on_event: Callable[[], None],
        *,
        log: Callable[[str], None],
    ) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                status, answer = receiver.handle(self.headers, self._body())
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes | None:
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    return None
                return self.rfile.read(length) if 0 <= length <= MAX_BODY_BYTES else None

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
                """Silent: `handle` logs what matters, without one line per request."""

        self.verifier = verifier
        self.model = model
        self.on_event = on_event
        self.log = log
        self.server = ThreadingHTTPServer(address, Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhooks", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def handle(self, headers: Headers, body: bytes | None) -> tuple[int, dict[str, str]]:
        """(HTTP status, JSON answer) for one delivery; wakes the follower when it concerns its model."""
        if body is None:
            return 413, {"error": f"the body must have a Content-Length of at most {MAX_BODY_BYTES} bytes"}
        try:
            payload = self.verifier.verify(headers, body)
        except DeliveryRejected as err:
            self.log(f"serving: refused a webhook delivery ({err.status}): {err.reason}")
            return err.status, {"error": err.reason}
        if not concerns(payload, self.model):
            return 200, {"status": "ignored"}
        self.on_event()
        return 200, {"status": "accepted"}

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhook_name(model: ModelReference) -> str:
    """The webhook's name in MLflow, for people: which endpoint it wakes (names allow [A-Za-z0-9._-])."""
    return f"{WEBHOOK_NAME_PREFIX}.{model.name}.{model.ref.removeprefix('@')}"


def register(client: MlflowClient, model: ModelReference, url: str, secret: str) -> str:
    """Create or update the one webhook that POSTs alias events of `model` to `url`; its id.

    The endpoint's URL is its identity: an earlier registration for the same URL (a restart) is updated
    in place, and any duplicates of it are deleted, so restarts never pile registrations up. Raises
    MlflowException or requests.RequestException when MLflow refuses (a file store has no webhooks; an http
    or private URL needs MLFLOW_WEBHOOK_ALLOWED_SCHEMES / MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS on the server).
    """
    mine = [webhook for webhook in all_webhooks(client) if webhook.url == url]
    fields = {
        "name": webhook_name(model),
        "url": url,
        "events": list(EVENTS),
        "description": f"wakes the serving endpoint that follows {model.uri}",
        "secret": secret,
        "status": WebhookStatus.ACTIVE,
    }
    if not mine:
        return client.create_webhook(**fields).webhook_id  # type: ignore[arg-type]
    for duplicate in mine[1:]:
        client.delete_webhook(duplicate.webhook_id)
    return client.update_webhook(mine[0].webhook_id, **fields).webhook_id  # type: ignore[arg-type]


def all_webhooks(client: MlflowClient) -> list[Any]:
    """Every webhook in the registry, all pages."""
    webhooks: list[Any] = []
    token = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        webhooks.extend(page)
        token = page.token
        if not token:
            return webhooks


REGISTRATION_ERRORS = (MlflowException, RequestException)
"""What registering may fail with: MLflow refused (no SQL store, a URL it does not allow) or is unreachable."""

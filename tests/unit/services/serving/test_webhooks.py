"""MLflow's webhook into the follower: deliveries signed as MLflow 3.12 signs them wake it, anything else gets a
4xx and changes nothing, other models' events are ignored, and restarts never pile registrations up."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from mlflow.entities.webhook import Webhook, WebhookEvent, WebhookStatus
from mlflow.exceptions import MlflowException
from mlflow.store.entities.paged_list import PagedList
from mlflow.webhooks.delivery import _generate_hmac_signature

from mlops_sandbox.settings import ModelReference
from services.serving import mlserver_start
from services.serving.settings import ServingSettings
from services.serving.webhooks import EVENTS, DeliveryRejected, Verifier, WebhookReceiver, register
from tests.unit.services.serving.test_follower import FakeServer, FakeStore
from tools.ports import free_port

SECRET = "a-webhook-secret"
MODEL = ModelReference(name="pytorch_simplenn_mnist", ref="@production")
NOW = 1_800_000_000.0


def delivery(
    data: dict[str, str] | None = None, *, event: str = "model_version_alias.created", sent: float = NOW
) -> tuple[dict[str, str], bytes]:
    """Headers and body as mlflow/webhooks/delivery.py sends them, signed by MLflow's own function."""
    entity, action = event.split(".")
    body = json.dumps(
        {
            "entity": entity,
            "action": action,
            "timestamp": "2027-01-15T08:00:00+00:00",
            "data": data or {"name": MODEL.name, "alias": "production", "version": "7"},
        }
    )
    delivery_id, timestamp = str(uuid.uuid4()), str(int(sent))
    return {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": _generate_hmac_signature(SECRET, delivery_id, timestamp, body),
    }, body.encode()


def verifier() -> Verifier:
    return Verifier(SECRET, clock=lambda: NOW)


def test_a_delivery_signed_as_mlflow_signs_it_is_accepted() -> None:
    headers, body = delivery()
    assert verifier().verify(headers, body)["data"]["version"] == "7"


@pytest.mark.parametrize(
    ("tamper", "status", "reason"),
    [
        (lambda h, b: ({k: v for k, v in h.items() if k != "X-MLflow-Signature"}, b), 401, "unsigned"),
        (lambda h, b: ({**h, "X-MLflow-Signature": "v1,AAAA"}, b), 401, "bad signature"),
        (lambda h, b: (h, b.replace(b'"7"', b'"8"')), 401, "bad signature"),
        (lambda h, b: ({**h, "X-MLflow-Delivery-Id": str(uuid.uuid4())}, b), 401, "bad signature"),
    ],
    ids=["missing", "wrong", "body-changed", "id-changed"],
)
def test_an_unsigned_or_badly_signed_delivery_is_refused(tamper: Any, status: int, reason: str) -> None:
    headers, body = tamper(*delivery())
    with pytest.raises(DeliveryRejected) as refused:
        verifier().verify(headers, body)
    assert (refused.value.status, reason in refused.value.reason) == (status, True)


def test_a_signature_with_another_secret_is_refused() -> None:
    headers, body = delivery()
    with pytest.raises(DeliveryRejected, match="bad signature"):
        Verifier("another-secret", clock=lambda: NOW).verify(headers, body)


def test_an_old_delivery_and_a_replayed_one_are_refused() -> None:
    check = verifier()
    with pytest.raises(DeliveryRejected, match="stale") as stale:
        check.verify(*delivery(sent=NOW - 301))
    assert stale.value.status == 400
    headers, body = delivery()
    check.verify(headers, body)
    with pytest.raises(DeliveryRejected, match="already received") as replayed:
        check.verify(headers, body)
    assert replayed.value.status == 409


@dataclass
class Wakes:
    count: int = 0
    lines: list[str] = field(default_factory=list)

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def receiver() -> Any:
    wakes = Wakes()
    running = WebhookReceiver(
        ("127.0.0.1", free_port()), Verifier(SECRET), MODEL, wakes, log=wakes.lines.append
    ).start()
    yield running, wakes, f"http://127.0.0.1:{running.port}/"
    running.stop()


def post(url: str, headers: dict[str, str], body: bytes) -> requests.Response:
    return requests.post(url, data=body, headers=headers, timeout=10)


def test_over_http_a_valid_event_for_the_followed_alias_wakes_the_follower(receiver: Any) -> None:
    _, wakes, url = receiver
    headers, body = delivery(sent=time.time())
    answer = post(url, headers, body)
    assert (answer.status_code, answer.json(), wakes.count) == (200, {"status": "accepted"}, 1)
    assert post(url, *delivery(event="model_version_alias.deleted", sent=time.time())).json()["status"] == "accepted"
    assert wakes.count == 2


def test_over_http_an_unsigned_delivery_gets_401_and_wakes_nothing(receiver: Any) -> None:
    _, wakes, url = receiver
    headers, body = delivery(sent=time.time())
    del headers["X-MLflow-Signature"]
    answer = post(url, headers, body)
    assert answer.status_code == 401 and "unsigned" in answer.json()["error"]
    answer = post(url, {**headers, "X-MLflow-Signature": "v1,forged"}, body)
    assert answer.status_code == 401 and answer.json() == {"error": "bad signature"}
    assert requests.get(url, timeout=10).status_code == 501
    assert wakes.count == 0
    assert wakes.lines == [
        "serving: refused a webhook delivery (401): unsigned: X-MLflow-Signature, X-MLflow-Timestamp and "
        "X-MLflow-Delivery-Id are required",
        "serving: refused a webhook delivery (401): bad signature",
    ]


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("model_version_alias.created", {"name": "another_model", "alias": "production", "version": "7"}),
        ("model_version_alias.created", {"name": MODEL.name, "alias": "staging", "version": "7"}),
        ("model_version.created", {"name": MODEL.name, "version": "7", "source": "s3://b/m"}),
        ("prompt_alias.created", {"name": MODEL.name, "alias": "production", "version": "7"}),
    ],
    ids=["other-model", "other-alias", "other-event", "prompt"],
)
def test_over_http_a_valid_event_about_something_else_is_ignored(
    receiver: Any, event: str, data: dict[str, str]
) -> None:
    _, wakes, url = receiver
    answer = post(url, *delivery(data, event=event, sent=time.time()))
    assert (answer.status_code, answer.json(), wakes.count) == (200, {"status": "ignored"}, 0)


class FakeRegistry:
    """MlflowClient's webhook calls over an in-memory table, listed two to a page."""

    def __init__(self, *urls: str) -> None:
        self.webhooks: dict[str, Webhook] = {}
        for url in urls:
            self.create_webhook(name="old", url=url, events=["model_version.created"])

    def create_webhook(self, **fields: Any) -> Webhook:
        webhook_id = str(uuid.uuid4())
        self.webhooks[webhook_id] = self._webhook(webhook_id, **fields)
        return self.webhooks[webhook_id]

    def update_webhook(self, webhook_id: str, **fields: Any) -> Webhook:
        self.webhooks[webhook_id] = self._webhook(webhook_id, **fields)
        return self.webhooks[webhook_id]

    def delete_webhook(self, webhook_id: str) -> None:
        del self.webhooks[webhook_id]

    def list_webhooks(self, max_results: int, page_token: str | None = None) -> PagedList[Webhook]:
        start = int(page_token or 0)
        rows = list(self.webhooks.values())
        token = str(start + 2) if start + 2 < len(rows) else None
        return PagedList(rows[start : start + 2], token)

    @staticmethod
    def _webhook(webhook_id: str, *, name: str, url: str, events: list[Any], **rest: Any) -> Webhook:
        return Webhook(
            webhook_id=webhook_id,
            name=name,
            url=url,
            events=[WebhookEvent.from_str(e) for e in events],
            status=rest.get("status", WebhookStatus.ACTIVE),
            secret=rest.get("secret"),
            description=rest.get("description"),
            creation_timestamp=0,
            last_updated_timestamp=0,
        )


def test_registering_again_updates_the_one_webhook_of_that_url() -> None:
    url = "http://serving:8083/"
    fake = FakeRegistry("http://serving-staging:8083/", "http://elsewhere:1/", "http://more:2/")
    first = register(fake, MODEL, url, SECRET)  # type: ignore[arg-type]
    assert register(fake, MODEL, url, "a-new-secret") == first  # type: ignore[arg-type]
    mine = [w for w in fake.webhooks.values() if w.url == url]
    assert len(mine) == 1 and len(fake.webhooks) == 4
    assert [str(e) for e in mine[0].events] == list(EVENTS)
    assert mine[0].secret == "a-new-secret" and mine[0].name == "sandbox-serving.pytorch_simplenn_mnist.production"


def test_duplicates_left_by_earlier_runs_are_deleted() -> None:
    url = "http://127.0.0.1:8083/"
    fake = FakeRegistry(url, "http://127.0.0.1:8093/", url, url)
    register(fake, MODEL, url, SECRET)  # type: ignore[arg-type]
    assert sorted(w.url for w in fake.webhooks.values()) == [url, "http://127.0.0.1:8093/"]


def serving_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> ServingSettings:
    for name in ("MLSERVER_HTTP_PORT", "MLSERVER_GRPC_PORT", "MLSERVER_METRICS_PORT"):
        monkeypatch.setenv(name, str(free_port()))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return ServingSettings()


def registration_done() -> None:
    """Wait for start_webhooks' registration thread."""
    for thread in threading.enumerate():
        if thread.name == "webhook-registration":
            thread.join(timeout=30)


class RefusingRegistry(FakeRegistry):
    def list_webhooks(self, max_results: int, page_token: str | None = None) -> PagedList[Webhook]:
        raise MlflowException("Webhooks are not supported by the FileStore backend")


def test_a_registry_without_webhooks_leaves_one_line_and_polling(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    settings = serving_settings(
        monkeypatch, SANDBOX_SERVING_WEBHOOK_ADDRESS=f"127.0.0.1:{port}", SANDBOX_SERVING_WEBHOOK_SECRET=SECRET
    )
    follower = mlserver_start.Follower(MODEL, lambda: "1", None, None, poll_seconds=2.0)  # type: ignore[arg-type]
    assert mlserver_start.start_webhooks(settings, RefusingRegistry(), follower) is not None  # type: ignore[arg-type]
    registration_done()
    assert capsys.readouterr().out.splitlines() == [
        f"serving: webhooks off, polling models:/pytorch_simplenn_mnist@production every 2 s: MLflow did not "
        f"register http://127.0.0.1:{port}/: Webhooks are not supported by the FileStore backend"
    ]
    with pytest.raises(requests.ConnectionError):  # the receiver was closed again
        requests.post(f"http://127.0.0.1:{port}/", timeout=5)


def test_a_registered_webhook_wakes_the_follower_which_polls_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    settings = serving_settings(
        monkeypatch, SANDBOX_SERVING_WEBHOOK_ADDRESS=f"127.0.0.1:{port}", SANDBOX_SERVING_WEBHOOK_SECRET=SECRET
    )
    store = FakeStore()  # serves version 1; the registry says 2
    server = FakeServer(store=store)
    # A poll interval far beyond the test's patience: only the webhook can make it look.
    follower = mlserver_start.Follower(MODEL, lambda: "2", store, server, poll_seconds=600, log=lambda line: None)
    fake = FakeRegistry()
    receiver = mlserver_start.start_webhooks(settings, fake, follower)  # type: ignore[arg-type]
    registration_done()
    assert receiver is not None and [w.url for w in fake.webhooks.values()] == [f"http://127.0.0.1:{port}/"]
    thread = threading.Thread(target=follower.follow, daemon=True)
    thread.start()
    try:
        assert post(f"http://127.0.0.1:{port}/", *delivery(sent=time.time())).status_code == 200
        deadline = time.monotonic() + 30
        while store.current != "2" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        follower.stop()
        receiver.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert server.reloads == ["2"], "the delivery did not wake the follower"


def test_a_stage_is_polled_only(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    settings = serving_settings(
        monkeypatch,
        SANDBOX_MODEL_REF="Production",
        SANDBOX_SERVING_WEBHOOK_ADDRESS=f"127.0.0.1:{free_port()}",
        SANDBOX_SERVING_WEBHOOK_SECRET=SECRET,
    )
    follower = mlserver_start.Follower(settings.model, lambda: "1", None, None, poll_seconds=2.0)  # type: ignore[arg-type]
    assert mlserver_start.start_webhooks(settings, FakeRegistry(), follower) is None  # type: ignore[arg-type]
    assert "MLflow sends no webhook when a stage changes" in capsys.readouterr().out


def test_a_webhook_address_needs_a_secret_and_a_port_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="set SANDBOX_SERVING_WEBHOOK_SECRET too"):
        serving_settings(monkeypatch, SANDBOX_SERVING_WEBHOOK_ADDRESS="127.0.0.1:8083")
    monkeypatch.setenv("SANDBOX_SERVING_WEBHOOK_SECRET", SECRET)
    with pytest.raises(ValueError, match="must differ"):
        serving_settings(monkeypatch, MLSERVER_HTTP_PORT="8083", SANDBOX_SERVING_WEBHOOK_ADDRESS="0.0.0.0:8083")
    settings = serving_settings(monkeypatch, SANDBOX_SERVING_WEBHOOK_ADDRESS="0.0.0.0:8083")
    assert settings.webhook_target == "http://127.0.0.1:8083/"
    monkeypatch.setenv("SANDBOX_SERVING_WEBHOOK_URL", "http://serving:8083/")
    assert ServingSettings().webhook_target == "http://serving:8083/"

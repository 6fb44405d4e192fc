"""`mlserver start`, with serving's alias follower in the same process.

    python -m services.serving.mlserver_start start <SANDBOX_SERVING_DIR>/current

MLServer's own CLI (`mlserver.cli.main`, what the `mlserver` command runs), as `mlflow models serve
--enable-mlserver` builds its command (services/serving/mlflow_serve.py puts this module in the place of the
`mlserver` program). Before MLServer starts, when SANDBOX_MODEL_REF is an alias or a stage, the follower
(services/serving/follower.py) starts as a daemon thread beside MLServer's event loop, on the model store
that the serving entrypoint prepared in SANDBOX_SERVING_DIR; with SANDBOX_SERVING_WEBHOOK_ADDRESS, so does the
receiver of MLflow's model-registry webhook (services/serving/webhooks.py). They reload the model through
MLServer's repository API on its own HTTP port, as they did from a process of their own.

Why here and not in a process of its own: the follower needs MLflow's client, which MLServer's process has
imported already to load the model. A follower process of its own held 129 MiB of PSS per endpoint (measured,
tools/benchmark/memory.py), most of it a second copy of MLflow.
"""

from __future__ import annotations

import sys
import threading

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlops_sandbox.settings import split_host_port
from mlops_sandbox.tracking import bound_request_retries
from services.serving.follower import FOLLOWER_RETRY_SECONDS, Follower, ModelServer
from services.serving.model_store import ModelStore
from services.serving.settings import ServingSettings
from services.serving.webhooks import REGISTRATION_ERRORS, Verifier, WebhookReceiver, register


def log(line: str) -> None:
    print(line, flush=True)


def polling(settings: ServingSettings) -> str:
    return f"polling {settings.model.uri} every {settings.poll_seconds:g} s"


def start_webhooks(settings: ServingSettings, client: MlflowClient, follower: Follower) -> WebhookReceiver | None:
    """Receive MLflow's alias events on SANDBOX_SERVING_WEBHOOK_ADDRESS, and register the webhook in MLflow.

    Returns the running receiver, or None without one: no address, or a stage (MLflow sends no event for
    stage transitions; one line says so). The registration runs in a thread of its own (`register_or_stop`):
    MLflow's client retries a store that answers 500, as a file store does for webhooks, for about 4 minutes,
    and serving must not wait for that. Without a receiver, the follower polls as it always did.
    """
    url, secret = settings.webhook_target, settings.webhook_secret
    if not settings.model.follows or url is None or secret is None:
        return None
    if not settings.model.ref.startswith("@"):
        log(f"serving: webhooks off, {polling(settings)}: MLflow sends no webhook when a stage changes")
        return None
    receiver = WebhookReceiver(
        split_host_port(settings.webhook_address or ""),
        Verifier(secret.get_secret_value()),
        settings.model,
        follower.wake,
        log=log,
    ).start()
    threading.Thread(
        target=register_or_stop, args=(settings, client, receiver), name="webhook-registration", daemon=True
    ).start()
    return receiver


def register_or_stop(settings: ServingSettings, client: MlflowClient, receiver: WebhookReceiver) -> bool:
    """Register the endpoint's webhook in MLflow and print one line about it; when MLflow refuses, stop the
    receiver and print why. True when registered."""
    url, secret = settings.webhook_target or "", settings.webhook_secret
    try:
        webhook_id = register(client, settings.model, url, secret.get_secret_value() if secret else "")
    except REGISTRATION_ERRORS as err:
        receiver.stop()
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, MlflowException) and err.error_code == "PERMISSION_DENIED":
            # MLflow 3.12's basic-auth app lets admins only list or create webhooks; serving's user reads.
            reason = (
                f"user {settings.tracking.username!r} may not register webhooks (MLflow's basic-auth app allows "
                "admins only, and serving's user is read-only)"
            )
        log(f"serving: webhooks off, {polling(settings)}: MLflow did not register {url}: {reason}")
        return False
    log(
        f"serving: MLflow posts alias moves of {settings.model.uri} to {url} (webhook {webhook_id}); "
        f"{polling(settings)} as the fallback"
    )
    return True


def start_following(settings: ServingSettings) -> Follower | None:
    """Start the follower thread (and the webhook receiver) on the store in SANDBOX_SERVING_DIR; None for a
    pinned version, or without a store (MLServer started by hand: nothing to follow into).

    The registry is not waited for here: the entrypoint reached it and checked the credentials a moment ago,
    and a registry out of reach later is what the follower's polls survive."""
    if not settings.model.follows or settings.serving_dir is None:
        return None
    bound_request_retries(FOLLOWER_RETRY_SECONDS)
    client = MlflowClient(tracking_uri=settings.tracking.tracking_uri)
    store = ModelStore.for_serving(settings, settings.serving_dir)
    follower = Follower(
        settings.model,
        lambda: settings.model.resolve(client),
        store,
        ModelServer(settings.url, settings.model.name),
        poll_seconds=settings.poll_seconds,
        log=log,
    )
    start_webhooks(settings, client, follower)
    threading.Thread(
        target=follower.run, kwargs={"ready_timeout": settings.registry_wait_seconds}, name="follower", daemon=True
    ).start()
    return follower


def main(argv: list[str] | None = None) -> None:
    """Start the follower, then MLServer's CLI with `argv` (default: this process's arguments). Does not
    return: MLServer's CLI (click) exits the process with its code."""
    start_following(ServingSettings())
    from mlserver.cli import main as mlserver_cli

    sys.argv = ["mlserver", *(sys.argv[1:] if argv is None else argv)]
    mlserver_cli()


if __name__ == "__main__":
    main()

"""The alias follower: keeps the version MLServer serves equal to the one a registry alias or stage points at.

It polls the registry every `poll_seconds`, and at once when woken (`wake`: the registry's webhook said
that the alias moved; see services/serving/webhooks.py). When the reference moves, it downloads the new
version, repoints the model store's `current` link and asks MLServer to load the model again in place
(MLServer loads the new copy before it releases the old one: no restart, no failed request). A failed switch
is reported and leaves the old version serving; the next poll tries again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import requests
from mlflow.exceptions import MlflowException

from mlops_sandbox.registry import RegistryError
from mlops_sandbox.settings import ModelReference
from mlops_sandbox.waiting import DependencyUnavailable, NotReadyYet, http_ok, wait_for

FOLLOWER_RETRY_SECONDS = 6.0
"""How long one registry request of serving retries (s). The follower's polls are its retries: a request that
retried for minutes (MLflow's default is about 4) would keep it from seeing the registry come back, and from
acting on the webhook's wake, for as long."""

FOLLOW_ERRORS = (RegistryError, MlflowException, requests.RequestException, RuntimeError, OSError)
"""What one poll may fail with and survive: the registry or MLServer out of reach, a failed download."""


class Store(Protocol):
    """The part of services.serving.model_store.ModelStore that the follower uses."""

    def current_version(self) -> str | None: ...
    def prepare(self, version: str, followed_ref: str) -> object: ...
    def activate(self, version: str) -> None: ...
    def prune(self) -> None: ...


class Server(Protocol):
    """The part of ModelServer that the follower uses."""

    def wait_until_ready(self, *, timeout: float, stopped: threading.Event) -> None: ...
    def reload(self) -> None: ...


class ModelServer:
    """MLServer's repository API for one model, over REST (`/v2/repository/models/NAME/load`)."""

    def __init__(self, url: str, model_name: str, *, load_timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.load_timeout = load_timeout

    def wait_until_ready(self, *, timeout: float, stopped: threading.Event) -> None:
        """Return once the model answers ready; DependencyUnavailable after `timeout` seconds or on `stopped`."""
        ready = http_ok(f"{self.url}/v2/models/{self.model_name}/ready")

        def probe() -> None:
            if stopped.is_set():
                raise DependencyUnavailable("serving is stopping")
            ready()

        wait_for(probe, service="MLServer", address=self.url, timeout=timeout)

    def reload(self) -> None:
        """Load the model again from its folder; RuntimeError with MLServer's answer when it refuses."""
        response = requests.post(f"{self.url}/v2/repository/models/{self.model_name}/load", timeout=self.load_timeout)
        if response.status_code != 200:
            raise RuntimeError(f"MLServer refused to load the model: {response.status_code} {response.text}")


class Follower:
    """Follows `model` (an alias or a stage) from the registry into the store and the server.

    `resolve` returns the version the reference points at now (the registry); `wait(seconds)` sleeps and
    returns True once the follower is to stop (the clock; by default, `poll_seconds` or until `wake`). Both
    are injected so that the follow loop can be run against a fake registry and a fake clock.
    """

    def __init__(
        self,
        model: ModelReference,
        resolve: Callable[[], str],
        store: Store,
        server: Server,
        *,
        poll_seconds: float,
        wait: Callable[[float], bool] | None = None,
        log: Callable[[str], None] = lambda line: print(line, flush=True),
    ) -> None:
        self.model = model
        self.resolve = resolve
        self.store = store
        self.server = server
        self.poll_seconds = poll_seconds
        self.stopped = threading.Event()
        self.woken = threading.Event()
        self.woken_by_event = False
        self.wait = wait or self.sleep
        self.log = log

    def wake(self) -> None:
        """Look at the registry now instead of at the next poll (called from the webhook receiver's thread)."""
        self.woken.set()

    def stop(self) -> None:
        self.stopped.set()
        self.woken.set()

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds`, or less when woken; True once the follower is to stop.

        The flag is cleared before the registry is read, so an event that arrives during a poll wakes the
        next one: a move is never left waiting for the poll after.
        """
        self.woken_by_event = self.woken.wait(seconds)
        self.woken.clear()
        return self.stopped.is_set()

    def switch(self, version: str) -> float:
        """Serve `version`: download it, repoint `current`, reload in place. Returns the seconds it took.

        When MLServer refuses the new version, `current` goes back to the previous one and RuntimeError
        propagates.
        """
        began = time.monotonic()
        previous = self.store.current_version()
        self.store.prepare(version, self.model.ref)
        self.store.activate(version)
        try:
            self.server.reload()
        except RuntimeError as err:
            if previous:
                self.store.activate(previous)
            raise RuntimeError(f"version {version}: {err}") from err
        self.store.prune()
        return time.monotonic() - began

    def poll(self) -> str | None:
        """One look at the registry: switch when the reference moved. Returns the version switched to, if any."""
        try:
            target = self.resolve()
            current = self.store.current_version()
            if target == current:
                return None
            took = self.switch(target)
        except FOLLOW_ERRORS as err:
            self.log(f"serving: could not follow {self.model.uri}, still serving {self.store.current_version()}: {err}")
            return None
        seen = " (woken by the registry's webhook)" if self.woken_by_event else ""
        self.log(
            f"serving: {self.model.uri} moved to version {target}{seen}; now serving it "
            f"(was {current}, switched in {took:.2f} s)"
        )
        return target

    def follow(self) -> None:
        """Poll every `poll_seconds`, and whenever woken, until stopped."""
        while not self.wait(self.poll_seconds):
            self.poll()

    def run(self, *, ready_timeout: float) -> None:
        """The follower thread: wait (boundedly) for MLServer to serve the first version, then follow."""
        try:
            self.server.wait_until_ready(timeout=ready_timeout, stopped=self.stopped)
        except (DependencyUnavailable, NotReadyYet) as err:
            self.log(f"serving: not following {self.model.uri}: {err}")
            return
        self.follow()

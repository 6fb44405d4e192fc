"""Bounded waiting for a service that another one depends on.

Every entrypoint that needs another service calls `wait_for`: it retries with a capped backoff for a
bounded time and then fails with a message naming the service, its address and what to check, instead
of a bare connection traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

import requests
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class DependencyUnavailable(RuntimeError):
    """A service this process depends on did not become ready in time."""


class NotReadyYet(Exception):
    """Raised by a probe to say "try again"; its message says what was seen."""


def wait_for(
    probe: Callable[[], T],
    *,
    service: str,
    address: str,
    timeout: float,
    hint: str = "",
    interval: float | None = None,
    notice: Callable[[str], object] | None = None,
) -> T:
    """Call `probe` until it returns without raising, for at most `timeout` seconds; return what it returned.

    Connection errors (requests', OSError) and `NotReadyYet` are retried; any other exception is a real error
    and propagates. Between tries it waits 0.25 s, doubling up to 3 s; with `interval`, that many seconds
    each time (for a wait whose length is itself measured). After `timeout` it raises DependencyUnavailable,
    naming `service`, `address`, the last error and `hint`.

    `notice`, when given, is called once, after the first failed try, with a line saying what is waited for,
    how long at most, and why, then `hint`: a command-line tool passes one that prints it, so that a person is
    not left looking at a silent terminal for the whole wait, and can act on it at once.
    """

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.info("waiting for %s at %s: %s", service, address, error)
        if notice is not None and state.attempt_number == 1:
            notice(f"waiting up to {timeout:g} s for {service} at {address} ({error})" + (f". {hint}" if hint else ""))

    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval) if interval is not None else wait_exponential(multiplier=0.25, max=3.0),
        retry=retry_if_exception_type((NotReadyYet, requests.ConnectionError, requests.Timeout, OSError)),
        before_sleep=before_sleep,
        reraise=False,
    )
    try:
        return retrying(probe)
    except RetryError as err:
        last = err.last_attempt.exception()
        message = f"{service} at {address} was not ready after {timeout:g} s (last error: {last})."
        if hint:
            message += f" {hint}"
        raise DependencyUnavailable(message) from None


def on_stderr(line: str) -> None:
    """A `notice` for command-line tools: the line on standard error, at once."""
    print(line, file=sys.stderr, flush=True)


def http_ok(url: str, *, timeout: float = 5.0) -> Callable[[], requests.Response]:
    """A probe that succeeds when GET `url` answers 200."""

    def probe() -> requests.Response:
        response = requests.get(url, timeout=timeout)
        if response.status_code != 200:
            raise NotReadyYet(f"GET {url} answered {response.status_code}")
        return response

    return probe


def wait_for_http(
    url: str, *, service: str, timeout: float, hint: str = "", notice: Callable[[str], object] | None = None
) -> None:
    """Wait until GET `url` answers 200 (wait_for, with its `notice`)."""
    wait_for(http_ok(url), service=service, address=url, timeout=timeout, hint=hint, notice=notice)

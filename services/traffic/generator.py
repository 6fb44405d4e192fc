"""The open-loop schedule and the images it sends: the parts of the traffic generator that know no protocol.

Open loop: request i is due at start + i / rate, whatever the server does. A slow answer occupies one of a
bounded number of workers and delays nothing else; a request that cannot go out on time (every worker is
waiting for an answer, or the scheduler itself woke up too late) is not sent late and is counted as skipped,
so the rate that reached the server is always known.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

MAX_LATENESS = 0.1
"""Seconds after its due time that a request may still go out; later, it is skipped rather than sent in a burst."""


class ImageCycle:
    """MNIST test images in a seeded order, cycled: request i carries the next `per_request` images after
    request i - 1's, wrapping around the set.

    `images`: float32 (N, 1, 28, 28) in [0, 1]; `labels`: int64 (N,). ValueError when they disagree or are empty.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, per_request: int, seed: int) -> None:
        if len(images) == 0 or len(images) != len(labels):
            raise ValueError(f"{len(images)} images and {len(labels)} labels")
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.per_request = per_request
        self.order = np.random.default_rng(seed).permutation(len(images))

    def batch(self, request: int) -> tuple[np.ndarray, np.ndarray]:
        """Images float32 (per_request, 1, 28, 28) and their labels int64 (per_request,) of request number
        `request` (0, 1, ...)."""
        start = request * self.per_request
        picked = self.order[np.arange(start, start + self.per_request) % len(self.order)]
        return self.images[picked], self.labels[picked]


@dataclass(frozen=True)
class ScheduleResult:
    """How a run went: requests due (`scheduled`), sent and skipped; wall time (seconds); whether a stop
    request ended it early."""

    scheduled: int
    sent: int
    skipped: int
    seconds: float
    stopped: bool


def run_open_loop(
    send: Callable[[int], None],
    *,
    rate: float,
    duration: float,
    concurrency: int,
    stop: threading.Event,
    on_skip: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
    wait: Callable[[float], bool] | None = None,
    executor: Executor | None = None,
    max_lateness: float = MAX_LATENESS,
) -> ScheduleResult:
    """Call `send(i)` for i = 0, 1, ... at `rate` per second for `duration` seconds, on `concurrency` threads.

    `send` does one request and must not raise (an exception is logged and the run goes on). `on_skip` is
    called for each request that could not be sent on time. `stop` ends the schedule early (signal handlers set
    it). `clock` (seconds), `wait` (sleep for a number of seconds; True if stopped meanwhile; default
    `stop.wait`) and `executor` (default: `concurrency` threads; shut down at the end) are injectable for tests.
    Returns when every sent request has finished.
    """
    wait = wait or stop.wait
    total = math.ceil(rate * duration)
    slots = threading.BoundedSemaphore(concurrency)
    sent = skipped = scheduled = 0

    def run(request: int) -> None:
        try:
            send(request)
        except Exception:  # a bug in send must not take a worker slot away for good
            log.exception("request %d failed", request)
        finally:
            slots.release()

    start = clock()
    with executor or ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="traffic") as pool:
        for request in range(total):
            due = start + request / rate
            if stop.is_set() or wait(max(0.0, due - clock())):
                break
            scheduled += 1
            if clock() - due > max_lateness or not slots.acquire(blocking=False):
                skipped += 1
                on_skip()
                continue
            sent += 1
            pool.submit(run, request)
    return ScheduleResult(scheduled, sent, skipped, clock() - start, stop.is_set())

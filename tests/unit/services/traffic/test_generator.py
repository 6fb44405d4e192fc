"""The open-loop schedule keeps its rate whatever the server does, and the images cycle in a seeded order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np
import pytest

from services.traffic.generator import ImageCycle, ScheduleResult, run_open_loop


class FakeClock:
    """A monotonic clock that moves only when the scheduler waits (plus `pauses`: extra seconds at given times)."""

    def __init__(self, pauses: dict[float, float] | None = None) -> None:
        self.now = 0.0
        self.pauses = dict(pauses or {})

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        for at in [at for at in self.pauses if self.now >= at]:
            self.now += self.pauses.pop(at)
        return False


class Inline(Executor):
    """Runs each request before the schedule goes on: an instant server, without thread timing in the test."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def two_seconds_at_10_per_second(send: Callable[[int], None], clock: FakeClock) -> ScheduleResult:
    """run_open_loop for 2 s at 10 requests/s, 4 workers, on `clock`, each send run inline."""
    return run_open_loop(
        send,
        rate=10,
        duration=2,
        concurrency=4,
        stop=threading.Event(),
        clock=clock,
        wait=clock.wait,
        executor=Inline(),
    )


def test_sends_each_request_at_its_due_time() -> None:
    clock, sent_at = FakeClock(), dict[int, float]()

    def send(request: int) -> None:
        sent_at[request] = clock()

    result = two_seconds_at_10_per_second(send, clock)
    assert (result.scheduled, result.sent, result.skipped, result.stopped) == (20, 20, 0, False)
    assert sorted(sent_at) == list(range(20))
    assert [sent_at[i] for i in range(20)] == pytest.approx([i / 10 for i in range(20)])


def test_slow_answers_do_not_slow_the_schedule_and_what_cannot_go_out_is_skipped() -> None:
    clock, release, started, skips = FakeClock(), threading.Event(), [], []

    def send(request: int) -> None:
        started.append((request, clock()))
        release.wait(10)  # a server that answers nothing until the schedule is over

    def on_skip() -> None:
        skips.append(clock())
        if len(skips) == 7:
            release.set()

    result = run_open_loop(
        send, rate=10, duration=1, concurrency=3, stop=threading.Event(), on_skip=on_skip, clock=clock, wait=clock.wait
    )
    assert (result.scheduled, result.sent, result.skipped) == (10, 3, 7)
    assert sorted(started) == [(0, 0.0), (1, 0.1), (2, 0.2)]
    assert skips == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]), "each skip at its own due time"


def test_a_late_scheduler_skips_overdue_requests_instead_of_sending_a_burst() -> None:
    clock, sent_at = FakeClock(pauses={0.5: 0.55}), dict[int, float]()

    def send(request: int) -> None:
        sent_at[request] = clock()

    result = two_seconds_at_10_per_second(send, clock)
    # Requests 5-9 were due at 0.5-0.9 s while the process stood still until 1.05 s.
    assert (result.sent, result.skipped) == (15, 5)
    assert sorted(sent_at) == [0, 1, 2, 3, 4, *range(10, 20)]
    assert sent_at[10] == pytest.approx(1.05) and sent_at[11] == pytest.approx(1.1)


def test_keeps_the_rate_in_real_time_with_slow_answers() -> None:
    started: list[float] = []
    begin = time.monotonic()

    def send(request: int) -> None:
        started.append(time.monotonic() - begin)
        time.sleep(0.3)  # 30 answers outstanding at any time: a closed loop of a few clients would fall behind

    result = run_open_loop(send, rate=100, duration=1, concurrency=64, stop=threading.Event())
    # A scheduler that wakes more than 0.1 s late skips rather than bursts: on a busy machine, a few may be.
    assert result.sent + result.skipped == 100 and result.skipped <= 5, result
    # Compared with what it beats rather than with a fixed time: 8 clients in a closed loop would send their
    # 100th request only after 100 x 0.3 s / 8 = 3.75 s; the open loop sends it at about 1 s.
    closed_loop_seconds = 100 * 0.3 / 8
    assert max(started) < closed_loop_seconds / 2, f"the last request went out at {max(started):.2f} s"


def test_stop_ends_the_schedule_early() -> None:
    clock, stop = FakeClock(), threading.Event()

    def send(request: int) -> None:
        if request == 4:
            stop.set()

    result = run_open_loop(
        send, rate=10, duration=60, concurrency=1, stop=stop, clock=clock, wait=clock.wait, executor=Inline()
    )
    assert result.stopped and result.sent == 5 and result.scheduled == 5


def test_a_failing_send_does_not_take_its_worker_slot() -> None:
    clock, calls = FakeClock(), []

    def send(request: int) -> None:
        calls.append(request)
        raise RuntimeError("a bug")

    result = run_open_loop(
        send,
        rate=10,
        duration=1,
        concurrency=1,
        stop=threading.Event(),
        clock=clock,
        wait=clock.wait,
        executor=Inline(),
    )
    assert (result.sent, result.skipped) == (10, 0) and len(calls) == 10


def numbered(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose pixels all equal their index / 100, and labels equal to their index modulo 10."""
    images = np.repeat(np.arange(count, dtype=np.float32) / 100, 784).reshape(count, 1, 28, 28)
    return images, np.arange(count) % 10


def test_image_cycle_is_seeded_covers_every_image_and_wraps() -> None:
    images, labels = numbered(5)
    cycle = ImageCycle(images, labels, per_request=2, seed=7)
    batches = [cycle.batch(request) for request in range(5)]  # 10 images: the set twice
    indices = np.concatenate([np.rint(batch[:, 0, 0, 0] * 100).astype(int) for batch, _ in batches])
    assert sorted(indices[:5]) == [0, 1, 2, 3, 4] and list(indices[5:]) == list(indices[:5])
    assert all(np.array_equal(truth, np.rint(batch[:, 0, 0, 0] * 100) % 10) for batch, truth in batches)
    assert batches[0][0].shape == (2, 1, 28, 28) and batches[0][0].dtype == np.float32
    assert np.array_equal(ImageCycle(images, labels, per_request=2, seed=7).batch(1)[0], batches[1][0])
    orders = {tuple(ImageCycle(images, labels, per_request=1, seed=seed).order) for seed in range(5)}
    assert len(orders) > 1, "the seed changes the order"


def test_image_cycle_refuses_mismatched_labels() -> None:
    images, labels = numbered(5)
    with pytest.raises(ValueError, match="5 images and 4 labels"):
        ImageCycle(images, labels[:4], per_request=1, seed=0)

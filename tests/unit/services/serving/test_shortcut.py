"""Gathered (services/serving/shortcut.py): shortcut requests that reach the event loop together share one forward
pass; alone, a request runs on the loop's next turn. The model here records what it is asked and answers each
request with its own images, so that every answer can be traced to its request."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from services.serving.shortcut import Gathered


class Recorder:
    """A model whose answer to each request is its images times 2, recording each pass's requests and labels."""

    def __init__(self, fail: bool = False) -> None:
        self.passes: list[list[str | None]] = []
        self.fail = fail

    def predict_arrays(self, batches: Sequence[np.ndarray], labels: Sequence[str | None]) -> list[np.ndarray]:
        self.passes.append(list(labels))
        if self.fail:
            raise RuntimeError("the forward pass failed")
        return [images * 2 for images in batches]


def requests(count: int) -> list[np.ndarray]:
    return [np.full((index + 1, 1, 28, 28), index, dtype=np.float32) for index in range(count)]


def run_together(gathered: Gathered, images: list[np.ndarray]) -> list[np.ndarray | BaseException]:
    async def run() -> list[np.ndarray | BaseException]:
        calls = [gathered.predict(batch, str(index)) for index, batch in enumerate(images)]
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(run())


def test_requests_that_arrive_together_share_one_pass_and_each_gets_its_own_answer() -> None:
    model = Recorder()
    images = requests(3)
    answers = run_together(Gathered(model, 16), images)
    assert model.passes == [["0", "1", "2"]]
    for batch, answer in zip(images, answers, strict=True):
        assert isinstance(answer, np.ndarray) and np.array_equal(answer, batch * 2)


def test_a_pass_takes_at_most_max_requests() -> None:
    model = Recorder()
    run_together(Gathered(model, 2), requests(5))
    assert model.passes == [["0", "1"], ["2", "3"], ["4"]]


def test_requests_one_after_the_other_run_alone() -> None:
    model = Recorder()
    gathered = Gathered(model, 16)

    async def run() -> None:
        for index, batch in enumerate(requests(2)):
            assert np.array_equal(await gathered.predict(batch, str(index)), batch * 2)

    asyncio.run(run())
    assert model.passes == [["0"], ["1"]]


@pytest.mark.parametrize("max_requests", [0, 1])
def test_without_batching_each_request_runs_at_once(max_requests: int) -> None:
    model = Recorder()
    run_together(Gathered(model, max_requests), requests(3))
    assert model.passes == [["0"], ["1"], ["2"]]


def test_a_failed_pass_fails_each_of_its_requests_and_the_next_pass_runs() -> None:
    model = Recorder(fail=True)
    gathered = Gathered(model, 16)
    answers = run_together(gathered, requests(3))
    assert all(isinstance(answer, RuntimeError) and "failed" in str(answer) for answer in answers)
    model.fail = False
    assert all(isinstance(answer, np.ndarray) for answer in run_together(gathered, requests(2)))
    assert model.passes == [["0", "1", "2"], ["0", "1"]]


def arriving_turns_apart(gathered: Gathered, turns: int) -> None:
    """Two requests, the second starting `turns` turns of the event loop after the first."""

    async def later(left: int) -> None:
        for _ in range(left):
            await asyncio.sleep(0)  # one turn of the loop
        await gathered.predict(requests(1)[0], "late")

    async def run() -> None:
        await asyncio.gather(gathered.predict(requests(1)[0], "first"), later(turns))

    asyncio.run(run())


def test_under_load_a_pass_waits_two_turns_for_company_and_alone_it_does_not() -> None:
    model = Recorder()
    gathered = Gathered(model, 16)
    arriving_turns_apart(gathered, 2)  # nothing before it: the first runs at once, alone
    assert model.passes == [["first"], ["late"]]
    run_together(gathered, requests(2))  # a pass with company
    model.passes.clear()
    arriving_turns_apart(gathered, 2)
    assert model.passes == [["first", "late"]], "under load, a request two turns later joined the pass"
    arriving_turns_apart(gathered, 6)
    assert model.passes == [["first", "late"], ["first"], ["late"]], "the wait is bounded"

"""The alias follower, against a fake registry, a fake model store, a fake MLServer and a fake clock."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from mlops_sandbox.registry import RegistryError
from mlops_sandbox.settings import ModelReference
from mlops_sandbox.waiting import DependencyUnavailable
from services.serving.follower import Follower

MODEL = ModelReference(name="pytorch_simplenn_mnist", ref="@production")


@dataclass
class FakeRegistry:
    """Answers one entry per poll: a version, or an exception to raise."""

    answers: list[str | Exception]

    def resolve(self) -> str:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class FakeStore:
    current: str | None = "1"
    prepared: list[str] = field(default_factory=list)
    pruned: int = 0

    def current_version(self) -> str | None:
        return self.current

    def prepare(self, version: str, followed_ref: str) -> None:
        self.prepared.append(version)

    def activate(self, version: str) -> None:
        self.current = version

    def prune(self) -> None:
        self.pruned += 1


@dataclass
class FakeServer:
    refuse: set[str] = field(default_factory=set)
    store: FakeStore | None = None
    reloads: list[str | None] = field(default_factory=list)
    ready_error: Exception | None = None

    def reload(self) -> None:
        version = self.store.current if self.store else None
        self.reloads.append(version)
        if version in self.refuse:
            raise RuntimeError("MLServer refused to load the model: 500 out of memory")

    def wait_until_ready(self, *, timeout: float, stopped: threading.Event) -> None:
        if self.ready_error:
            raise self.ready_error


@dataclass
class FakeClock:
    """The follower's sleep: records each wait, and says "stop" after `polls` of them."""

    polls: int
    waits: list[float] = field(default_factory=list)

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return len(self.waits) > self.polls


def follower(
    answers: list[str | Exception], *, polls: int, refuse: frozenset[str] = frozenset()
) -> tuple[Follower, FakeStore, FakeServer, FakeClock, list[str]]:
    """A follower of @production whose store serves version 1, polling every 2 s for `polls` polls."""
    registry, store, clock = FakeRegistry(list(answers)), FakeStore(), FakeClock(polls)
    server, log = FakeServer(refuse=set(refuse), store=store), list[str]()
    following = Follower(
        MODEL,
        registry.resolve,
        store,
        server,
        poll_seconds=2.0,
        wait=clock.wait,
        log=log.append,  # type: ignore[arg-type]
    )
    return following, store, server, clock, log


def test_it_polls_every_poll_seconds_and_switches_only_when_the_alias_moves() -> None:
    following, store, server, clock, log = follower(["1", "1", "2", "2", "3"], polls=5)
    following.follow()
    assert clock.waits == [2.0] * 6
    assert store.prepared == ["2", "3"] and server.reloads == ["2", "3"]
    assert store.current == "3" and store.pruned == 2
    assert [line.split(";")[0] for line in log] == [
        "serving: models:/pytorch_simplenn_mnist@production moved to version 2",
        "serving: models:/pytorch_simplenn_mnist@production moved to version 3",
    ]


def test_a_registry_out_of_reach_keeps_the_current_version_and_the_next_poll_recovers() -> None:
    following, store, server, _, log = follower([RegistryError("tracking server unreachable"), "2"], polls=2)
    following.follow()
    assert "could not follow models:/pytorch_simplenn_mnist@production, still serving 1" in log[0]
    assert "tracking server unreachable" in log[0]
    assert store.current == "2" and server.reloads == ["2"]


def test_a_version_mlserver_refuses_is_rolled_back_to_the_one_that_served() -> None:
    following, store, server, _, log = follower(["2"], polls=1, refuse=frozenset({"2"}))
    assert following.poll() is None
    assert store.current == "1", "the `current` link must point at the version that still serves"
    assert server.reloads == ["2"] and store.pruned == 0
    assert "still serving 1" in log[0] and "version 2: MLServer refused" in log[0]


def test_it_does_not_follow_a_server_that_never_became_ready() -> None:
    following, store, server, clock, log = follower(["2"], polls=3)
    server.ready_error = DependencyUnavailable("MLServer at http://127.0.0.1:8080 was not ready after 300 s")
    following.run(ready_timeout=300)
    assert clock.waits == [] and store.prepared == []
    assert log == [
        "serving: not following models:/pytorch_simplenn_mnist@production: "
        "MLServer at http://127.0.0.1:8080 was not ready after 300 s"
    ]


@pytest.mark.parametrize("ref", ["@staging", "Production"])
def test_aliases_and_stages_are_followed_and_numbers_are_pinned(ref: str) -> None:
    assert ModelReference(ref=ref).follows
    assert not ModelReference(ref="3").follows

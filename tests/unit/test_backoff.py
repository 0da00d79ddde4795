"""The one backoff helper: capped exponential delays, injectable clock and sleep."""

from __future__ import annotations

import threading

import pytest

from usersignals.backoff import Backoff
from usersignals.errors import StoreError
from usersignals.processing.store_retry import StoreRetry


class FakeTime:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_delays_double_then_stay_at_the_cap() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.delay(0) == 0.0
    assert backoff.delay(100_000) == 1.0  # no overflow after hours of holding


def test_only_the_named_errors_are_retried_and_a_bug_propagates_at_once() -> None:
    time = FakeTime()
    backoff = Backoff(initial_s=0.1, max_s=0.3, sleep=time.sleep, clock=time.clock)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionError("down")
        return "up"

    assert backoff.call(flaky, (ConnectionError,)) == "up"
    assert time.sleeps == [0.1, 0.2, 0.3]

    def buggy() -> str:
        calls.append(1)
        raise KeyError("a bug")

    calls.clear()
    with pytest.raises(KeyError):
        backoff.call(buggy, (ConnectionError,))
    assert len(calls) == 1


def test_gives_up_after_the_attempts_or_the_time_budget() -> None:
    time = FakeTime()
    backoff = Backoff(initial_s=1.0, max_s=4.0, sleep=time.sleep, clock=time.clock)
    retried: list[int] = []

    def down() -> None:
        raise TimeoutError("still down")

    with pytest.raises(TimeoutError):
        backoff.call(down, (TimeoutError,), attempts=3, on_retry=lambda n, _: retried.append(n))
    assert retried == [1, 2]
    time.sleeps.clear()
    with pytest.raises(TimeoutError):
        backoff.call(down, (TimeoutError,), budget_s=10.0)
    assert time.sleeps == [1.0, 2.0, 4.0, 4.0]  # 11 s on the fake clock, then it gives up


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=2.0, max_s=1.0)


def test_the_store_retry_paces_its_attempts_with_the_injected_backoff() -> None:
    # The store retry has no loop of its own: its waits are the Backoff's, on its clock.
    time = FakeTime()
    retry = StoreRetry(backoff=Backoff(0.05, 0.2, sleep=time.sleep, clock=time.clock))
    outage: list[bool] = []

    def write() -> str:
        outage.append(True)
        if len(outage) < 5:
            raise StoreError("redis", "write", "connection refused")
        return "written"

    assert retry.call(write, "writing a batch") == "written"
    assert time.sleeps == [0.05, 0.1, 0.2, 0.2]
    assert retry.failures == 4
    assert retry.available


def test_the_store_retry_gives_up_when_stopped_during_an_outage() -> None:
    stop = threading.Event()
    time = FakeTime()
    retry = StoreRetry(stop, backoff=Backoff(0.05, 0.2, sleep=time.sleep, clock=time.clock))

    def write() -> None:
        stop.set()  # a SIGTERM arrives while the store is down
        raise StoreError("redis", "write", "connection refused")

    with pytest.raises(StoreError, match="connection refused"):
        retry.call(write, "writing a batch")
    assert time.sleeps == []  # no wait once stopping: nothing was committed
    assert not retry.available


def test_a_bug_is_not_retried_by_the_store_retry() -> None:
    time = FakeTime()
    retry = StoreRetry(backoff=Backoff(0.05, 0.2, sleep=time.sleep, clock=time.clock))
    with pytest.raises(KeyError):
        retry.call(lambda: {}["missing"], "writing a batch")
    assert time.sleeps == []
    assert retry.failures == 0

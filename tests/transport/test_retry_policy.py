"""Backoff arithmetic and Retry-After parsing: pure functions, checked without a network."""

from __future__ import annotations

import datetime as dt

import pytest
from dockd.transport.retry import RetryPolicy, parse_retry_after


def test_backoff_grows_exponentially_with_jitter_and_stays_under_the_cap() -> None:
    policy = RetryPolicy(initial=0.5, maximum=3.0)
    for attempt, step in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (50, 3.0), (5000, 3.0)]:
        waits = {policy.backoff(attempt) for _ in range(50)}
        assert all(step / 2 <= w <= step for w in waits), (attempt, waits)
        assert len(waits) > 1  # jittered, so docks that failed together do not retry together


def test_retry_after_wins_when_longer_but_never_beyond_the_cap() -> None:
    policy = RetryPolicy(initial=0.01, maximum=5.0)
    assert policy.backoff(1, retry_after=2.0) == 2.0
    assert policy.backoff(1, retry_after=3600.0) == 5.0
    assert policy.backoff(1, retry_after=0.0) <= 0.01


@pytest.mark.parametrize("bad", [{"attempts": 0}, {"initial": -1.0}, {"request_timeout": 0.0}])
def test_nonsense_policies_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)  # type: ignore[arg-type]


def test_retry_after_in_seconds_and_as_http_date() -> None:
    now = dt.datetime(2026, 11, 21, 10, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 120 ") == 120.0
    assert parse_retry_after("Sat, 21 Nov 2026 10:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Sat, 21 Nov 2026 09:00:00 GMT", now=now) == 0.0  # in the past


@pytest.mark.parametrize("garbage", [None, "", "soon", "-5", "1e9", "Mon, 99 Foo 2026"])
def test_unparseable_retry_after_is_ignored(garbage: str | None) -> None:
    assert parse_retry_after(garbage) is None

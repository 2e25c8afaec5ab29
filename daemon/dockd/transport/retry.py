"""Bounded retries with capped, jittered exponential backoff that honours `Retry-After`.

Generic on purpose: it knows nothing about tus. An attempt signals "a later attempt may succeed"
by raising `TransientFailure`; anything else propagates at once. When every attempt failed,
`RetriesExhausted` carries the last cause and the most recent server hint, and the caller turns
that into its own error type.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

T = TypeVar("T")

log = structlog.get_logger()

_DELAY_SECONDS = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*")
# 2**60 times any sane initial delay is already far beyond any cap; keeps the float math finite.
_MAX_EXPONENT = 60


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one request tries before giving up. Only transient failures are retried."""

    attempts: int = 6  # per request, transient failures only
    initial: float = 0.5  # first backoff (s)
    maximum: float = 30.0  # cap on any single wait (s), Retry-After included
    request_timeout: float = 120.0  # total per request (a PATCH of a chunk)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.initial < 0 or self.maximum < 0:
            raise ValueError("RetryPolicy waits must not be negative")
        if self.request_timeout <= 0:
            raise ValueError("RetryPolicy.request_timeout must be positive")

    def backoff(self, attempt_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt `attempt_number` (1-based).

        Equal jitter: half the exponential step is fixed, half random, so concurrent docks
        spread out without any of them retrying in a tight loop. A server's `Retry-After`
        wins when it asks for longer; `maximum` caps both, so one hostile or confused header
        cannot park an upload for hours.
        """
        step = min(self.maximum, self.initial * 2.0 ** min(attempt_number - 1, _MAX_EXPONENT))
        wait = random.uniform(step / 2, step)  # noqa: S311 - jitter, not cryptography
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.maximum)


class TransientFailure(Exception):
    """One attempt failed in a way that a later attempt may not (5xx, 429, timeout, reset...)."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


class RetriesExhausted(Exception):
    """Every attempt failed transiently. `retry_after` is the most recent server hint, if any."""

    def __init__(self, last: TransientFailure, attempts: int, retry_after: float | None) -> None:
        super().__init__(f"{last.cause} (gave up after {attempts} attempts)")
        self.last = last
        self.attempts = attempts
        self.retry_after = retry_after


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delay-seconds or HTTP-date); None if absent/invalid.

    A date in the past means "now" (0 s). Garbage is ignored rather than trusted.
    """
    if value is None:
        return None
    match = _DELAY_SECONDS.fullmatch(value)
    if match:
        return float(match.group(1))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP-dates are GMT by definition
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


async def call_with_retries(
    policy: RetryPolicy, attempt: Callable[[], Awaitable[T]], *, what: str
) -> T:
    """Run `attempt` until it returns, raises a non-transient error, or attempts run out.

    `what` names the request in logs (e.g. "PATCH https://host/files/abc"); never put header
    values or secrets in it.
    """
    latest_hint: float | None = None

    def wait(state: RetryCallState) -> float:
        nonlocal latest_hint
        failure = _failure_of(state)
        if failure.retry_after is not None:
            latest_hint = failure.retry_after
        return policy.backoff(state.attempt_number, failure.retry_after)

    def before_sleep(state: RetryCallState) -> None:
        log.warning(
            "tus.retry",
            request=what,
            cause=_failure_of(state).cause,
            attempt=state.attempt_number,
            of=policy.attempts,
            wait=round(state.next_action.sleep if state.next_action else 0.0, 3),
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait,
        retry=retry_if_exception_type(TransientFailure),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        async for try_once in retrying:
            with try_once:
                return await attempt()
    except TransientFailure as last:
        if last.retry_after is not None:
            latest_hint = last.retry_after
        raise RetriesExhausted(last, policy.attempts, latest_hint) from last
    raise AssertionError("unreachable: tenacity either returns, raises or retries")


def _failure_of(state: RetryCallState) -> TransientFailure:
    exc = state.outcome.exception() if state.outcome else None
    assert isinstance(exc, TransientFailure)  # the retry predicate admits nothing else
    return exc

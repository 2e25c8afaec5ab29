"""The dock's upload bandwidth limit: one token bucket shared by every upload, and a timetable.

Every PATCH body is written in slices (tus.py `_WRITE_SLICE`); each slice takes its bytes from
this bucket before it goes to the socket, so a block is sent as one request, paced, and never
bursts the link. Waiters are served first come, first served, and an upload has at most one
slice waiting, so concurrent uploads share the cap evenly (round robin by slice).

The rate in force is, first match wins: an operator's override (control socket, `dockctl
bandwidth`), the first timetable window that contains the current local time, then the
configured `limit`. None means unlimited. A change wakes the waiters at once, so it applies to
uploads in flight, slice by slice, without restarting them.

Timetable entries (config `[bandwidth] timetable`, one string each):

    "Mon-Fri 07:00-09:00 2MiB"     weekdays, a lower cap during the morning rush
    "Sat,Sun 00:00-24:00 off"      weekends unlimited
    "* 22:00-06:00 50MB"           every day, overnight (a window may wrap past midnight; it
                                   belongs to the day it starts on)

Days: Mon Tue Wed Thu Fri Sat Sun, ranges (Mon-Fri) and lists (Sat,Sun), or * for every day.
Rates are bytes per second: 2MiB, 500KiB, 20MB, 1GB, a plain number of bytes, or off.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Bandwidth", "TokenBucket", "Window", "format_rate", "parse_rate", "parse_timetable"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The bucket holds at most this many bytes (or a tenth of a second at the rate, if more): enough
# for one write slice, small enough that a cap is never exceeded by more than a slice.
MIN_BURST = 256 * 1024
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB|K|M|G)?(?:/s)?\s*$")
_RATE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "K": 1 << 10,  # rclone's suffixes are binary
    "M": 1 << 20,
    "G": 1 << 30,
}
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


def parse_rate(value: str | int | float) -> float | None:
    """Bytes per second from "2MiB", "20MB", 1048576, "off" (None = unlimited). ValueError."""
    if isinstance(value, bool):
        raise ValueError("a rate must be a number of bytes per second or a string like '2MiB'")
    if isinstance(value, int | float):
        rate = float(value)
    else:
        if value.strip().lower() in ("off", "none", "unlimited", "0"):
            return None
        match = _RATE.match(value)
        if not match:
            raise ValueError(f"not a rate: {value!r} (e.g. '2MiB', '20MB', 1048576 or 'off')")
        rate = float(match.group(1)) * _RATE_UNITS[match.group(2)]
    if rate == 0:
        return None
    if rate < 1024:
        raise ValueError(f"a rate below 1 KiB/s ({rate:g} B/s) is surely a mistake; use 'off'")
    return rate


def format_rate(rate: float | None) -> str:
    if rate is None:
        return "off"
    return f"{rate / 1e6:.3g} MB/s"


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int  # minutes after midnight, end > start, may exceed 1440 (wraps into the next day)
    rate: float | None
    text: str

    def contains(self, when: dt.datetime) -> bool:
        minute = when.hour * 60 + when.minute
        today, yesterday = when.weekday(), (when.weekday() - 1) % 7
        if today in self.days and self.start <= minute < self.end:
            return True
        # The part of yesterday's window that runs past midnight.
        return yesterday in self.days and minute + 1440 < self.end


def _days(text: str) -> frozenset[int]:
    if text == "*":
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"unknown day in {text!r} (use Mon..Sun, Mon-Fri, Sat,Sun or *)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


def parse_window(entry: str) -> Window:
    parts = entry.split()
    if len(parts) != 3:
        raise ValueError(
            f"expected 'DAYS HH:MM-HH:MM RATE' (e.g. 'Mon-Fri 07:00-09:00 2MiB'), got {entry!r}"
        )
    days, span, rate = parts
    match = _TIME.match(span)
    if not match:
        raise ValueError(f"expected a time span like 07:00-09:00, got {span!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end > 1440:
        raise ValueError(f"{span!r}: the latest end is 24:00")
    if end == start:
        raise ValueError(f"{span!r}: an empty window")
    if end < start:
        end += 1440  # overnight
    return Window(_days(days), start, end, parse_rate(rate), entry)


def parse_timetable(entries: list[str]) -> tuple[Window, ...]:
    return tuple(parse_window(e) for e in entries)


class TokenBucket:
    """Bytes per second with a small burst; FIFO waiters; the rate can change at any time.

    `clock` is injectable so the accounting can be tested exactly, without sleeping.
    """

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rate = rate
        self._tokens = float(self.burst)
        self._stamp = clock()
        self._queue: deque[asyncio.Future[None]] = deque()
        self._changed = asyncio.Event()
        self.granted = 0  # bytes handed out since start (for the status API and the bench)

    @property
    def rate(self) -> float | None:
        return self._rate

    @property
    def burst(self) -> int:
        return MIN_BURST if self._rate is None else max(MIN_BURST, int(self._rate / 10))

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def _refill(self, now: float) -> None:
        if self._rate is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def set_rate(self, rate: float | None) -> None:
        """Change the rate now; waiters recompute at once (tokens earned so far are kept)."""
        self._refill(self._clock())
        self._rate = rate
        self._tokens = min(self._tokens, float(self.burst))
        self.poke()

    def poke(self) -> None:
        """Wake the waiters to look at the bucket again (a rate change, or a test's clock)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def take(self, n: int) -> float:
        """Take `n` bytes if the bucket has them: 0.0; else the seconds until it will (no take).

        A request larger than the burst is granted once the bucket is full, and the bucket goes
        into debt for the rest, so the long-run rate stays exact.
        """
        now = self._clock()
        self._refill(now)
        if self._rate is None:
            self.granted += n
            return 0.0
        need = min(float(n), float(self.burst))
        if self._tokens >= need:
            self._tokens -= n
            self.granted += n
            return 0.0
        return (need - self._tokens) / self._rate

    async def acquire(self, n: int) -> None:
        """Wait for `n` bytes, behind everyone who asked earlier."""
        if self._rate is None and not self._queue:
            self.granted += n
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        try:
            if self._queue[0] is not turn:
                await turn  # resolved when the waiter ahead is served
            while (wait := self.take(n)) > 0:
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await changed.wait()
        finally:
            head = self._queue[0] is turn
            self._queue.remove(turn)
            if head and self._queue and not self._queue[0].done():
                self._queue[0].set_result(None)


class Bandwidth:
    """The rate in force: override, else timetable window, else the configured limit."""

    def __init__(
        self,
        limit: float | None,
        timetable: tuple[Window, ...] = (),
        *,
        now: Callable[[], dt.datetime] = dt.datetime.now,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._now = now
        self.limit = limit
        self.timetable = timetable
        self.override: float | None = None
        self.overridden = False
        self.bucket = TokenBucket(self._pick(), clock=clock)

    def _pick(self) -> float | None:
        if self.overridden:
            return self.override
        when = self._now()
        for window in self.timetable:
            if window.contains(when):
                return window.rate
        return self.limit

    def source(self) -> str:
        if self.overridden:
            return "operator"
        when = self._now()
        window = next((w for w in self.timetable if w.contains(when)), None)
        return f"timetable: {window.text}" if window else "config limit"

    def apply(self) -> None:
        """Re-evaluate the rate in force (after a change, and as the clock moves)."""
        rate = self._pick()
        if rate != self.bucket.rate:
            self.bucket.set_rate(rate)

    def set_override(self, rate: float | None) -> None:
        self.override, self.overridden = rate, True
        self.apply()

    def clear_override(self) -> None:
        self.override, self.overridden = None, False
        self.apply()

    def reconfigure(self, limit: float | None, timetable: tuple[Window, ...]) -> None:
        """A reloaded config: it replaces the limit and timetable and ends any override."""
        self.limit, self.timetable = limit, timetable
        self.clear_override()

    def as_dict(self) -> dict[str, object]:
        rate = self.bucket.rate
        return {
            "rate": rate,
            "rate_text": format_rate(rate),
            "source": self.source(),
            "limit": self.limit,
            "timetable": [w.text for w in self.timetable],
            "granted_bytes": self.bucket.granted,
            "waiting": self.bucket.waiting,
        }

    async def follow_timetable(self, every: float = 5.0) -> None:
        """Apply timetable changes as the wall clock crosses window edges (until cancelled)."""
        while True:
            self.apply()
            await asyncio.sleep(every)

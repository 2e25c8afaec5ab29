"""The bandwidth limiter's token bucket and timetable, on an injected clock (no sleeping)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from dockd.config import ConfigError
from dockd.crypto.keys import keygen
from dockd.transport.bandwidth import (
    MIN_BURST,
    Bandwidth,
    TokenBucket,
    parse_rate,
    parse_timetable,
)
from support.dock import dock_config, settings_from

MIB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_accounting_is_exact() -> None:
    clock = Clock()  # times and rates chosen so the float arithmetic is exact
    bucket = TokenBucket(MIB, clock=clock)  # 1 MiB/s; burst = 256 KiB (more than rate/10)
    assert bucket.burst == MIN_BURST
    assert bucket.take(MIN_BURST) == 0.0  # starts full
    assert bucket.take(65536) == 1 / 16  # empty: 64 KiB needs 1/16 s
    clock.now += 1 / 32
    assert bucket.take(65536) == 1 / 32  # half earned, nothing taken
    clock.now += 1 / 32
    assert bucket.take(65536) == 0.0
    assert bucket.take(1) == 1 / MIB
    clock.now += 10  # idle time earns no more than the burst
    assert bucket.take(MIN_BURST) == 0.0
    assert bucket.take(1) > 0
    assert bucket.granted == 2 * MIN_BURST + 65536


def test_a_request_larger_than_the_burst_goes_into_debt() -> None:
    clock = Clock()
    bucket = TokenBucket(MIB, clock=clock)
    assert bucket.take(4 * MIN_BURST) == 0.0  # granted on a full bucket...
    # ...and paid back: the next byte waits for 3 bursts plus itself.
    assert bucket.take(1) == (3 * MIN_BURST + 1) / MIB


def test_rate_change_keeps_earned_tokens_and_off_means_no_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(2 * MIB, clock=clock)
    bucket.take(MIN_BURST)
    clock.now += 1 / 32  # earned 64 KiB at the old rate
    bucket.set_rate(MIB)
    assert bucket.take(98304) == 1 / 32  # 32 KiB short at the new rate
    bucket.set_rate(None)
    assert bucket.take(10**9) == 0.0


async def test_waiters_are_served_in_order_and_a_rate_change_wakes_them() -> None:
    clock = Clock()
    bucket = TokenBucket(MIB, clock=clock)
    bucket.take(MIN_BURST)  # empty
    served: list[str] = []

    async def upload(name: str) -> None:
        await bucket.acquire(65536)
        served.append(name)

    tasks = [asyncio.create_task(upload(n)) for n in ("a", "b", "c")]
    for _ in range(5):
        await asyncio.sleep(0)
    assert served == [] and bucket.waiting == 3
    clock.now += 1 / 16  # exactly one request earned
    bucket.poke()
    while not served:
        await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    assert served == ["a"]
    bucket.set_rate(None)  # "off": everyone goes now, in order
    await asyncio.gather(*tasks)
    assert served == ["a", "b", "c"]


def test_rates_and_timetable_windows() -> None:
    assert parse_rate("2MiB") == 2 * 1024 * 1024
    assert parse_rate("20MB") == 20_000_000
    assert parse_rate("off") is None and parse_rate(0) is None
    with pytest.raises(ValueError):
        parse_rate("fast")
    windows = parse_timetable(
        ["Mon-Fri 07:00-09:00 2MiB", "Sat,Sun 00:00-24:00 off", "* 22:00-06:00 50MB"]
    )
    monday_8 = dt.datetime(2026, 11, 16, 8, 0)
    bandwidth = Bandwidth(10_000_000.0, windows, now=lambda: monday_8)
    assert bandwidth.bucket.rate == 2 * 1024 * 1024
    assert "Mon-Fri" in bandwidth.source()
    assert not windows[0].contains(dt.datetime(2026, 11, 16, 9, 0))  # the end is exclusive
    assert windows[2].contains(dt.datetime(2026, 11, 17, 5, 59))  # overnight, past midnight
    saturday = dt.datetime(2026, 11, 21, 12, 0)
    assert windows[1].contains(saturday) and not windows[0].contains(saturday)
    bandwidth.set_override(1_000_000.0)
    assert bandwidth.bucket.rate == 1_000_000.0 and bandwidth.source() == "operator"
    bandwidth.clear_override()
    assert bandwidth.bucket.rate == 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"limit": "fast"}, "bandwidth.limit"),
        ({"timetable": ["Mon-Fri 07:00 2MiB"]}, "bandwidth.timetable[0]"),
        ({"timetable": ["Lun 07:00-09:00 2MiB"]}, "bandwidth.timetable[0]"),
        ({"timetable": ["* 07:00-09:00 2MiB", 5]}, "bandwidth.timetable[1]"),
        ({"limt": "2MiB"}, "bandwidth.limt"),
    ],
)
def test_bad_bandwidth_config_names_file_and_key(tmp_path, section, key) -> None:
    keys = keygen(tmp_path / "keys")
    recipient = keys.age_recipient.read_text().strip()
    data = dock_config(
        tmp_path, "http://127.0.0.1:1/files/", recipient, public_key=keys.server_public_key
    )
    data["bandwidth"] = section
    with pytest.raises(ConfigError) as raised:
        settings_from(tmp_path, data)
    assert key in str(raised.value) and "dockd.toml" in str(raised.value)

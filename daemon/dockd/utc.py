"""The one way dockd writes a time: RFC 3339 in UTC with a "Z" (`2026-11-29T23:40:00Z`).

isoformat, not strftime: glibc's %Y writes year 1 as "1", not "0001". Seconds by default; the
audit chain and manifests keep microseconds (`timespec="microseconds"`), which orders records
written within one second.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal


def iso_utc(when: dt.datetime, *, timespec: Literal["seconds", "microseconds"] = "seconds") -> str:
    """`when` (an aware datetime) in UTC as RFC 3339 with "Z"; sub-seconds only if asked for."""
    return when.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def now_utc() -> str:
    """The current time, `iso_utc` to the second."""
    return iso_utc(dt.datetime.now(dt.UTC))

"""When a clip was recorded, from inputs the camera controls: a sidecar string and an mtime.

Both are hostile. A sidecar can say `9999-12-31T23:59:59-14:00` (valid ISO 8601, but past the
last instant Python's datetime can hold once moved to UTC), and a file system can hold an mtime
far past 2262 (ext4 up to 2446, tmpfs and crafted images anywhere in 64-bit seconds) or before
1970. None of that may crash discovery: a value we cannot place on the calendar is recorded as
"unknown", and the raw value is kept (bounded) in the clip's metadata for the record.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dockd.utc import iso_utc

UNKNOWN = "unknown"
MAX_SIDECAR_TIME = 64  # characters: longer is not a timestamp
_NS = 1_000_000_000


def from_ns(ns: int) -> str | None:
    """ISO 8601 UTC of a nanosecond Unix time, or None if the calendar cannot hold it."""
    try:
        seconds, _rest = divmod(ns, _NS)
        return iso_utc(dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds))
    except (OverflowError, ValueError):
        return None


def from_text(value: str) -> str | None:
    """ISO 8601 UTC of a sidecar's timestamp string, or None if it is not one we can place."""
    if not 0 < len(value) <= MAX_SIDECAR_TIME:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return iso_utc(parsed)
    except (ValueError, OverflowError):
        return None


def recorded_at(sidecar: dict[str, Any] | None, mtime_ns: int) -> tuple[str, str, dict[str, str]]:
    """(recorded_at, its source, notes for the clip's metadata) for a found clip.

    The sidecar's `recorded_at` wins when it is a time we can place; else the file's mtime; else
    "unknown". The notes keep any raw value that was not used, so nothing the camera said is lost.
    """
    notes: dict[str, str] = {}
    value = (sidecar or {}).get("recorded_at")
    if value is not None:
        if isinstance(value, str) and (parsed := from_text(value)) is not None:
            return parsed, "sidecar", notes
        notes["recorded_at_raw"] = repr(value)[:MAX_SIDECAR_TIME]
    from_mtime = from_ns(mtime_ns)
    if from_mtime is not None:
        return from_mtime, "mtime", notes
    notes["mtime_ns_raw"] = str(mtime_ns)
    return UNKNOWN, "unknown", notes

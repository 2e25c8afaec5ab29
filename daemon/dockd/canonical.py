"""Canonical JSON: the exact bytes that are hashed (audit chain) and signed (manifests).

Sorted keys, no insignificant whitespace, UTF-8 (non-ASCII text kept as is), integers only (no
floats: every time is an RFC 3339 string). For these values the output is the RFC 8785 (JCS) form,
so a verifier in another language can rebuild the bytes from the parsed JSON.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from dockd.utc import iso_utc


def dumps(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def rfc3339(epoch: float) -> str:
    """UTC, microseconds, 'Z': e.g. 2026-11-21T10:00:00.123456Z."""
    return iso_utc(dt.datetime.fromtimestamp(epoch, dt.UTC), timespec="microseconds")


def parse_rfc3339(text: str) -> dt.datetime:
    """Parse an RFC 3339 / ISO 8601 time; a time without a zone is taken as UTC."""
    parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)

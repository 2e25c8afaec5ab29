"""One UTC formatter for the tree; the receipt's wire form and the audit chain's stay byte-identical."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd import canonical
from dockd.crypto import receipt
from dockd.utc import iso_utc

TIMES = [
    dt.datetime(2026, 11, 29, 23, 40, 0, tzinfo=dt.UTC),
    dt.datetime(2026, 1, 1, 1, 0, 5, 999_999, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=dt.timezone(dt.timedelta(hours=-14))),
]


@pytest.mark.parametrize("when", TIMES)
def test_a_receipts_completion_time_keeps_its_wire_form(when: dt.datetime) -> None:
    header = receipt.sign(
        Ed25519PrivateKey.generate(), upload="u", length=1, sha256="0" * 64, completed=when
    )
    payload = header.split(".")[1]
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert fields["completed"] == when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("when", TIMES)
def test_audit_times_keep_microseconds_and_z(when: dt.datetime) -> None:
    expected = when.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert canonical.rfc3339(when.timestamp()) == expected


def test_year_one_is_four_digits() -> None:
    assert iso_utc(dt.datetime(1, 1, 1, tzinfo=dt.UTC)) == "0001-01-01T00:00:00Z"

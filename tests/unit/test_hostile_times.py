"""Any time a camera can claim is recorded safely (issue 11, item 1): property-style.

The kernel holds nanosecond times as 64-bit seconds plus nanoseconds (about +-9.2e27 ns), and a
sidecar is arbitrary JSON. Whatever value arrives, discovery must record the clip: the journal
stores it (SQLite INTEGER is 64-bit), `recorded_at` is a real UTC time or "unknown", the raw value
is kept, and the same file found again is the same version (no duplicate rows, no crash).
"""

from __future__ import annotations

import os
from pathlib import Path

from dockd import recorded_time
from dockd.devices.camera import FileIdentity, saturate_i64, wrap_u64
from dockd.journal import Journal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.clips import new_clip

# Everything a timespec64 can express, in nanoseconds (and a little past, for good measure).
KERNEL_NS = st.integers(min_value=-(2**63) * 10**9 - 10**9, max_value=(2**63) * 10**9 + 10**9)
U64 = st.integers(min_value=0, max_value=2**64 - 1)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
ISO_LIKE = st.builds(
    lambda y, tz: f"{y:04d}-12-31T23:59:59{tz}",
    st.integers(min_value=1, max_value=9999),
    st.sampled_from(["Z", "-14:00", "+14:00", "", "+00:00", "-23:59"]),
)


def _stat(ino: int, dev: int, size: int, mtime_ns: int, ctime_ns: int) -> os.stat_result:
    # os.stat_result from a tuple: the 10 classic fields, 3 float times, 3 ns times.
    return os.stat_result(
        (0o100644, ino, dev, 1, 0, 0, size, 0, 0, 0, 0.0, 0.0, 0.0, 0, mtime_ns, ctime_ns)
    )


@given(mtime=KERNEL_NS, sidecar_value=JSON | ISO_LIKE)
def test_recorded_at_never_raises_and_is_a_time_or_unknown(mtime, sidecar_value):
    when, source, notes = recorded_time.recorded_at({"recorded_at": sidecar_value}, mtime)
    assert source in ("sidecar", "mtime", "unknown")
    if source == "unknown":
        assert when == "unknown" and notes["mtime_ns_raw"] == str(mtime)
    else:
        assert len(when) == 20 and when.endswith("Z")  # YYYY-MM-DDTHH:MM:SSZ
    if source != "sidecar" and sidecar_value is not None:
        assert "recorded_at_raw" in notes  # what the camera said is kept


@given(sidecar=st.dictionaries(st.text(max_size=12), JSON, max_size=6), mtime=KERNEL_NS)
def test_any_sidecar_object_is_taken_without_error(sidecar, mtime):
    recorded_time.recorded_at(sidecar, mtime)


def test_year_9999_at_minus_14_hours_is_not_a_crash():
    when, source, notes = recorded_time.recorded_at(
        {"recorded_at": "9999-12-31T23:59:59-14:00"}, 1_700_000_000 * 10**9
    )
    assert (when, source) == ("2023-11-14T22:13:20Z", "mtime")
    assert "9999-12-31T23:59:59-14:00" in notes["recorded_at_raw"]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ino=U64, dev=U64, mtime=KERNEL_NS, ctime=KERNEL_NS)
def test_the_journal_stores_any_identity_and_finds_it_again(tmp_path: Path, ino, dev, mtime, ctime):
    ident = FileIdentity.from_stat(_stat(ino, dev, 10, mtime, ctime))
    assert ident == FileIdentity(
        wrap_u64(dev), wrap_u64(ino), 10, saturate_i64(mtime), ident.ctime_ns
    )
    folder = tmp_path / f"j{ino % 1000}-{abs(mtime) % 1000}"
    journal = Journal.open(folder)
    try:
        path = b"DCIM/A.MP4"
        journal.add_clip(
            new_clip(
                path,
                size=ident.size,
                mtime_ns=ident.mtime_ns,
                ctime_ns=ident.ctime_ns,
                dev=ident.dev,
                ino=ident.ino,
            )
        )
        live = journal.find_live("CAM1", path, ident.size, ident.mtime_ns, ident.ctime_ns)
        assert live is not None
        found = FileIdentity(live.dev, live.ino, live.size, live.mtime_ns, live.ctime_ns)
        assert found == ident and not ident.differs_from(found)
    finally:
        journal.close()
        for name in os.listdir(folder):
            os.unlink(folder / name)
        os.rmdir(folder)


def test_distinct_device_and_inode_numbers_stay_distinct_past_2_to_the_63():
    assert wrap_u64(2**64 - 1) != wrap_u64(2**63 - 1)
    assert wrap_u64(2**63) == -(2**63)
    assert saturate_i64(2**70) == 2**63 - 1 and saturate_i64(-(2**70)) == -(2**63)

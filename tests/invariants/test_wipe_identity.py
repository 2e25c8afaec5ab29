"""The wipe removes only the very file that was read: any identity field that moved stops it.

`wipe_clip` is given the identity recorded when the clip was read. Each test makes exactly one
field of it differ from the file now on the camera, by crafting it from the real stat or by
really replacing the file with one of the same size and the same mtime (pinned to the
nanosecond), and asserts the court's question: is the file still there, byte for byte?
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
from dockd.devices.camera import ClipReplaced, FileIdentity, wipe_clip
from support.adversary import rewrite_in_place

REL = b"DCIM/100/A.MP4"
ORIGINAL = b"the clip that was read and uploaded\n" * 1000


@pytest.fixture
def root(tmp_path: Path) -> Path:
    camera = tmp_path / "camera"
    (camera / "DCIM/100").mkdir(parents=True)
    (camera / os.fsdecode(REL)).write_bytes(ORIGINAL)
    return camera


def _identity(path: Path) -> FileIdentity:
    return FileIdentity.from_stat(os.stat(path))


def _assert_refused(root: Path, expected: FileIdentity, content: bytes, field: str) -> None:
    with pytest.raises(ClipReplaced, match=field):
        wipe_clip(root, REL, expected)
    path = root / os.fsdecode(REL)
    assert path.exists(), f"wiped although {field} differs"
    assert path.read_bytes() == content


def test_control_the_file_that_was_read_is_wiped(root: Path) -> None:
    wipe_clip(root, REL, _identity(root / os.fsdecode(REL)))
    assert not (root / os.fsdecode(REL)).exists()


@pytest.mark.parametrize("field", ["dev", "ino", "size", "mtime_ns", "ctime_ns"])
def test_one_identity_field_off_is_refused(root: Path, field: str) -> None:
    found = _identity(root / os.fsdecode(REL))
    value = getattr(found, field)
    assert value is not None
    expected = dataclasses.replace(found, **{field: value + 1})
    _assert_refused(root, expected, ORIGINAL, field)


def _replace_keeping_size_and_mtime(root: Path, content: bytes) -> None:
    """Another file (a new inode) renamed over the clip, with the old size and exact mtime."""
    path = root / os.fsdecode(REL)
    old = os.stat(path)
    assert len(content) == old.st_size
    fresh = path.with_name("A.MP4.new")
    fresh.write_bytes(content)
    os.utime(fresh, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(fresh, path)
    new = os.stat(path)
    assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert new.st_ino != old.st_ino


def test_replaced_file_with_same_size_and_mtime_is_refused(root: Path) -> None:
    expected = _identity(root / os.fsdecode(REL))
    other = ORIGINAL.replace(b"uploaded", b"replaced")
    _replace_keeping_size_and_mtime(root, other)
    _assert_refused(root, expected, other, "ino")


def test_replaced_file_against_a_row_without_ctime_is_refused_by_inode(root: Path) -> None:
    """A journal row from schema 2 has no ctime: the inode alone must still catch the swap."""
    expected = dataclasses.replace(_identity(root / os.fsdecode(REL)), ctime_ns=None)
    other = ORIGINAL.replace(b"uploaded", b"replaced")
    _replace_keeping_size_and_mtime(root, other)
    _assert_refused(root, expected, other, "ino")


def _wait_for_ctime_clock_past(directory: Path, past_ns: int) -> None:
    """File times come from the kernel's coarse clock (a tick of some ms): wait until a file
    changed now gets a ctime after `past_ns`, so a change is visible in ctime at all."""
    probe = directory / ".ctime-probe"
    deadline = time.monotonic() + 5
    while True:
        probe.write_bytes(b"tick")
        if os.stat(probe).st_ctime_ns > past_ns:
            probe.unlink()
            return
        assert time.monotonic() < deadline, "the file system's ctime never moved"
        time.sleep(0.001)


def test_rewritten_in_place_with_mtime_restored_is_refused(root: Path) -> None:
    """Same inode, same size, mtime put back to the nanosecond: only ctime tells."""
    path = root / os.fsdecode(REL)
    before = os.stat(path)
    expected = FileIdentity.from_stat(before)
    _wait_for_ctime_clock_past(root, before.st_ctime_ns)
    other = ORIGINAL.replace(b"uploaded", b"rewritten")[: before.st_size]
    other += b"\0" * (before.st_size - len(other))
    now = rewrite_in_place(path, other)
    assert now.st_ctime_ns != before.st_ctime_ns
    _assert_refused(root, expected, other, "ctime_ns")

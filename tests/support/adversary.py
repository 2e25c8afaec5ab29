"""What a hostile camera (or a local process) does to a clip, for tests."""

from __future__ import annotations

import os
from pathlib import Path


def rewrite_in_place(path: Path, data: bytes) -> os.stat_result:
    """Write `data` over the file (same inode, same size) and put its mtime back to the
    nanosecond, as `utimensat` allows any owner to. Only ctime can tell afterwards."""
    before = os.stat(path)
    assert len(data) == before.st_size, "an in-place rewrite keeps the size"
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    return after
